"""Sign-on rules in the admin: superusers edit all of them, organization owners (and admins) their own
organization's. Team admins see the rules that place people in their team, read-only. Writes go
through the services (audited); the people list shows whether a person signs in through the provider."""

from __future__ import annotations

from django.contrib import admin

from apps.sso import services
from apps.sso.models import GroupMapping, SsoIdentity
from apps.teams.admin_base import TenantScopedAdmin, reaches_any
from apps.teams.models import Organization, Team


@admin.register(GroupMapping)
class GroupMappingAdmin(TenantScopedAdmin):
    list_display = ("value", "kind", "organization", "team", "role", "created_at")
    list_filter = (("organization", admin.RelatedOnlyFieldListFilter), "kind", "role")
    search_fields = ("value",)
    list_select_related = ("organization", "team")
    fields = ("kind", "value", "organization", "team", "role")
    change_action = services.MAPPING_ACTION
    delete_action = services.MAPPING_ACTION

    def has_add_permission(self, request) -> bool:
        return reaches_any(Organization, request.user, "team.create")  # an admin of some organization

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "organization":
            kwargs["queryset"] = Organization.objects.restrict(request.user, "team.create")
        elif db_field.name == "team":
            kwargs["queryset"] = Team.objects.restrict(request.user, "team.set_ceiling").select_related("organization")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def service_save(self, request, form, change):
        values = {name: form.cleaned_data.get(name) for name in ("kind", "value", "organization", "team", "role")}
        if change:
            original = self.original(form)
            changed = {name: value for name, value in values.items() if getattr(original, name) != value}
            return services.group_mapping_update(actor=self.actor(request), mapping=original, **changed)
        return services.group_mapping_create(actor=self.actor(request), **values)

    def service_delete(self, request, obj) -> None:
        services.group_mapping_delete(actor=self.actor(request), mapping=obj)


@admin.register(SsoIdentity)
class SsoIdentityAdmin(TenantScopedAdmin):
    """Who signs in through the provider, with the groups of their last sign-in: read-only."""

    list_display = ("user", "subject", "groups", "client_id", "last_login_at", "synced_at")
    search_fields = ("user__username", "subject")
    list_select_related = ("user",)
    readonly_fields = ("user", "issuer", "subject", "groups", "client_id", "last_login_at", "synced_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
