"""The audit trail in the admin: read-only, and only the events of tenants the user administers.

Events are written by the services (apps/teams/audit.py) for every change made through the admin or
the REST API. Nobody edits or deletes them here, not even a superuser: that is what makes them audit.
"""

from __future__ import annotations

import json

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from apps.teams.admin_base import truncated
from apps.teams.models import AuditEvent
from apps.teams.scoping import CHANGE, tenancy_for


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "actor_label",
        "action_and_fields",
        "object_label",
        "team_label",
        "origin",
    )
    # The changed fields under the action, the source above the address, long names cut to a line (their
    # tooltip says them whole): the list fits the content area beside the side bars at 1024 px (issue 21).
    # RelatedOnlyFieldListFilter offers only teams present in the (restricted) queryset: no other tenant's names.
    list_filter = ("source", "action", "object_type", ("team", admin.RelatedOnlyFieldListFilter), "created_at")
    search_fields = ("actor_label", "action", "object_repr", "object_id")
    date_hierarchy = "created_at"
    list_select_related = ("team__organization", "organization")
    readonly_fields = (
        "created_at",
        "actor_label",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "organization",
        "team",
        "source",
        "ip_address",
        "changes_pretty",
    )
    exclude = ("actor", "changes")
    list_per_page = 50
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest):
        # "Change" rights over a tenant are exactly its admins: org owners/admins, team owners/admins.
        return AuditEvent.objects.restrict(request.user, CHANGE).select_related("team__organization", "organization")

    def _is_tenant_admin(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff and tenancy_for(request.user).is_tenant_admin

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._is_tenant_admin(request)

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        if not self._is_tenant_admin(request):
            return False
        return obj is None or self.get_queryset(request).filter(pk=obj.pk).exists()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.display(description="action (fields)", ordering="action")
    def action_and_fields(self, obj: AuditEvent) -> str:
        names = ", ".join(sorted(obj.changes or {}))
        if not names:
            return obj.action
        names = names if len(names) <= 200 else names[:197] + "..."
        return format_html('{}<br><small class="gw-small">{}</small>', obj.action, truncated(names))

    @admin.display(description="team", ordering="team")
    def team_label(self, obj: AuditEvent) -> str:
        return truncated(str(obj.team)) if obj.team_id else "-"

    @admin.display(description="from")
    def origin(self, obj: AuditEvent) -> str:
        if not obj.ip_address:
            return obj.source
        return format_html('{}<br><span class="gw-small">{}</span>', obj.source, obj.ip_address)

    @admin.display(description="object", ordering="object_repr")
    def object_label(self, obj: AuditEvent) -> str:
        return truncated(obj.object_repr)

    @admin.display(description="changes")
    def changes_pretty(self, obj: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.changes, indent=2, sort_keys=True, default=str))
