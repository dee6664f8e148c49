"""What the console adds to the admin pages of the apps below it: the key usage panel, "test connection",
and the request explorer, which is the spend ledger's admin (``apps/console/explorer.py``).

Keys and proxy sit below the console and never import it; their ModelAdmins offer an extension point
(``VirtualKeyAdmin.usage_panel_add``, ``ModelDeploymentAdmin.action_add``) that this module plugs into.
Django's admin autodiscovery imports it once at startup, like every app's ``admin.py``.
"""

from __future__ import annotations

from django.contrib import admin, messages

from apps.console import deployment_health
from apps.console.explorer import RequestExplorerAdmin
from apps.console.key_usage import key_usage_panel
from apps.keys.admin import VirtualKeyAdmin
from apps.proxy.admin import ModelDeploymentAdmin
from apps.spend.models import SpendLog
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


VirtualKeyAdmin.usage_panel_add(key_usage_panel)
ModelDeploymentAdmin.action_add(test_connection_action)
admin.site.register(SpendLog, RequestExplorerAdmin)
