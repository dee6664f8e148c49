"""Admin for deployments (credentials write-only), model groups and aliases."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.utils.html import format_html

from apps.proxy import services
from apps.proxy.models import ModelAlias, ModelDeployment, ModelGroup
from apps.teams.admin_base import TenantScopedAdmin, truncated
from apps.teams.scoping import DELETE


class DeploymentForm(forms.ModelForm):
    """``api_key`` is never rendered back: the widget starts empty and an empty submit keeps the stored key."""

    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave empty to keep the stored key.",
    )
    clear_api_key = forms.BooleanField(label="Remove the stored API key", required=False)

    class Meta:
        model = ModelDeployment
        # api_base's form field comes from the admin (https as the default scheme), not from this class.
        fields = ("organization", *(name for name in services.DEPLOYMENT_SETTABLE if name != "api_base"))


@admin.register(ModelDeployment)
class ModelDeploymentAdmin(TenantScopedAdmin):
    form = DeploymentForm
    delete_action = DELETE  # org admins their organization's deployments, superusers the shared ones
    # Provider and upstream model share a column, the API base is cut to a line: fits 1024 px (issue 21).
    list_display = ("model_name", "upstream", "api_base_display", "organization", "credentials", "enabled", "priority")
    list_filter = ("provider", "enabled", "model_name", ("organization", admin.RelatedOnlyFieldListFilter))
    search_fields = ("model_name", "model", "api_base")
    list_select_related = ("organization",)
    # Filled from above: the console adds its "test connection" action (apps/console/admin.py; the health pages
    # live at /admin/gateway/deployments/), so the proxy never imports the console.
    actions: tuple = ()

    @admin.display(description="provider / model", ordering="provider")
    def upstream(self, obj: ModelDeployment) -> str:
        return format_html('{}<br><span class="gw-small">{}</span>', obj.get_provider_display(), obj.model)

    @admin.display(description="API base", ordering="api_base")
    def api_base_display(self, obj: ModelDeployment) -> str:
        return truncated(obj.api_base) if obj.api_base else "-"

    fieldsets = (
        (None, {"fields": ("model_name", "provider", "model", "organization", "enabled")}),
        ("Upstream", {"fields": ("api_base", "api_version", "region", "api_key", "clear_api_key", "credentials")}),
        (
            "Prices (USD per token)",
            {
                "fields": (
                    "input_cost_per_token",
                    "output_cost_per_token",
                    "cached_input_cost_per_token",
                    "cache_creation_input_token_cost",
                )
            },
        ),
        (
            "Capacity and routing",
            {"fields": ("rpm_limit", "tpm_limit", "max_parallel_requests", "weight", "priority", "timeout_seconds")},
        ),
        ("Provider options", {"classes": ("collapse",), "fields": ("extra",)}),
    )

    @classmethod
    def action_add(cls, action) -> None:
        if action not in cls.actions:
            cls.actions = (*cls.actions, action)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "api_base":
            kwargs["assume_scheme"] = "https"
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="credentials")
    def credentials(self, obj) -> str:
        return "set" if obj is not None and obj.has_credentials else "not set"

    def get_readonly_fields(self, request, obj=None):
        return ("credentials", "organization") if obj is not None else ("credentials",)

    def service_save(self, request, form, change):
        data = form.cleaned_data
        api_key = "" if data.get("clear_api_key") else (data.get("api_key") or None)
        if change:
            values = self.changed_values(form, services.DEPLOYMENT_SETTABLE)
            return services.deployment_update(
                actor=self.actor(request), deployment=self.original(form), api_key=api_key, **values
            )
        values = self.form_values(form, services.DEPLOYMENT_SETTABLE)
        return services.deployment_create(
            actor=self.actor(request), organization=data.get("organization"), api_key=api_key, **values
        )

    def service_delete(self, request, obj) -> None:
        services.deployment_delete(actor=self.actor(request), deployment=obj)


class RoutingAdmin(TenantScopedAdmin):
    """Groups and aliases are shared by all tenants: superusers only (``.restrict`` gives others nothing)."""

    delete_action = DELETE

    def service_save(self, request, form, change):
        return services.routing_save(actor=self.actor(request), obj=form.instance)

    def service_delete(self, request, obj) -> None:
        services.routing_delete(actor=self.actor(request), obj=obj)


@admin.register(ModelGroup)
class ModelGroupAdmin(RoutingAdmin):
    list_display = ("model_name", "strategy", "fallbacks", "num_retries", "rpm_capacity", "tpm_capacity")
    list_filter = ("strategy",)
    search_fields = ("model_name",)


@admin.register(ModelAlias)
class ModelAliasAdmin(RoutingAdmin):
    list_display = ("alias", "model_name")
    search_fields = ("alias", "model_name")
