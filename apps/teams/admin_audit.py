"""The audit trail in the admin: read-only, and only the events of tenants the user administers.

Events are written by the services (apps/teams/audit.py) for every change made through the admin or
the REST API. Nobody edits or deletes them here, not even a superuser: that is what makes them audit.
"""

from __future__ import annotations

import json

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from apps.teams.models import AuditEvent
from apps.teams.scoping import CHANGE, tenancy_for


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "actor_label",
        "action",
        "object_repr",
        "changed_fields",
        "team",
        "source",
        "ip_address",
    )
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

    @admin.display(description="fields")
    def changed_fields(self, obj: AuditEvent) -> str:
        names = ", ".join(sorted(obj.changes or {}))
        return names if len(names) <= 80 else names[:77] + "..."

    @admin.display(description="changes")
    def changes_pretty(self, obj: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.changes, indent=2, sort_keys=True, default=str))
