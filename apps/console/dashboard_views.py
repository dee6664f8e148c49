"""Admin pages beside the ModelAdmins: live traffic and the per-model-group deployment health pages.

Thin views: each one asks a selector for what the user may see and renders it inside the admin's
chrome (``admin.site.each_context``). They are wrapped by ``admin.site.admin_view`` in the urlconf,
so they need a staff session, are never cached and are CSRF-protected like the rest of the admin.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.views.decorators.http import require_POST

from apps.console import deployment_health
from apps.console.live_selectors import recent_requests
from apps.teams.audit import actor_from_request

LIVE_BACKLOG = 50


def _context(request: HttpRequest, title: str, **extra) -> dict:
    return {**admin.site.each_context(request), "title": title, **extra}


def live_traffic(request: HttpRequest) -> HttpResponse:
    rows = recent_requests(request.user, limit=LIVE_BACKLOG)
    return TemplateResponse(request, "admin/gateway/live.html", _context(request, "Live traffic", rows=rows))


def deployment_groups(request: HttpRequest) -> HttpResponse:
    groups = deployment_health.groups_for(request.user)
    return TemplateResponse(request, "admin/gateway/deployments.html", _context(request, "Deployments", groups=groups))


def deployment_group(request: HttpRequest, model_name: str) -> HttpResponse:
    health = deployment_health.group_health(request.user, model_name)
    if health is None:
        raise Http404("No such model group.")
    return TemplateResponse(
        request,
        "admin/gateway/deployment_group.html",
        _context(
            request,
            f"Model group {model_name}",
            group=health,
            model_name=model_name,
            probe_interval=settings.DEPLOYMENT_PROBE_INTERVAL_SECONDS,
        ),
    )


@require_POST
def deployment_test(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        deployment = deployment_health.deployment_for_test(request.user, pk)
    except PermissionDenied:
        raise Http404("No such deployment.") from None
    result = deployment_health.deployment_test_connection(
        actor=actor_from_request(request, "admin"), deployment=deployment
    )
    level = messages.SUCCESS if result.ok else messages.ERROR
    messages.add_message(request, level, f"Test connection to {deployment}: {result.summary}")
    return redirect("gateway-deployment-group", model_name=deployment.model_name)
