"""Admin glue for deployments from the dashboard side: the "test connection" bulk action."""

from __future__ import annotations

from django.contrib import admin, messages

from apps.teams import deployment_health
from apps.teams.audit import actor_from_request
from apps.teams.scoping import CHANGE

MAX_TESTS_PER_ACTION = 20


@admin.action(description="Test connection (one tiny request each)")
def test_connection_action(modeladmin, request, queryset) -> None:
    """Probe each selected deployment the user may change; report each result as a message."""
    actor = actor_from_request(request, "admin")
    changeable = queryset.restrict(request.user, CHANGE).order_by("pk")
    for deployment in changeable[:MAX_TESTS_PER_ACTION]:
        result = deployment_health.deployment_test_connection(actor=actor, deployment=deployment)
        level = messages.SUCCESS if result.ok else messages.ERROR
        modeladmin.message_user(request, f"{deployment}: {result.summary}", level)
    skipped = queryset.count() - min(changeable.count(), MAX_TESTS_PER_ACTION)
    if skipped > 0:
        note = f"{skipped} not tested (not yours to change, or over the limit)."
        modeladmin.message_user(request, note, messages.WARNING)
