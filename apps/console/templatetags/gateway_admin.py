"""Template tags for the admin overrides: the dashboard on the index, recent audit events, money."""

from __future__ import annotations

import logging
from decimal import Decimal

from django import template
from django.db import DatabaseError

from apps.console.charts import format_money
from apps.console.dashboard import dashboard_for
from apps.teams.models import AuditEvent
from apps.teams.scoping import CHANGE, tenancy_for

register = template.Library()
logger = logging.getLogger(__name__)
RECENT_AUDIT_EVENTS = 8


@register.simple_tag(takes_context=True)
def gateway_dashboard(context):
    """The viewer's dashboard, or None before the spend ledger exists (fresh install mid-migration)."""
    request = context.get("request")
    if request is None or not request.user.is_authenticated:
        return None
    try:
        return dashboard_for(request.user)
    except DatabaseError:
        logger.exception("dashboard: spend ledger unavailable")
        return None


@register.simple_tag(takes_context=True)
def gateway_recent_audit(context, limit: int = RECENT_AUDIT_EVENTS):
    request = context.get("request")
    if request is None or not tenancy_for(request.user).is_tenant_admin:
        return []
    return list(AuditEvent.objects.restrict(request.user, CHANGE).order_by("-created_at")[:limit])


@register.filter
def money(value) -> str:
    if value in (None, ""):
        return "–"
    return format_money(Decimal(str(value)))


@register.filter
def percent(value) -> str:
    return f"{float(value or 0):.1f}%"
