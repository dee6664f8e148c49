"""Admin for MCP servers (headers write-only: typed in, never rendered back) and their grants."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin

from apps.mcp import services
from apps.mcp.models import McpGrant, McpServer
from apps.teams.admin_base import ModelListField, TenantScopedAdmin
from apps.teams.scoping import DELETE


class HeadersField(forms.CharField):
    """A JSON object of headers; the widget always starts empty (write-only), empty keeps the stored ones."""

    widget = forms.Textarea(attrs={"rows": 3, "autocomplete": "off"})

    def to_python(self, value):
        text = (super().to_python(value) or "").strip()
        if not text:
            return None
        try:
            parsed = json.loads(text)
        except ValueError:
            raise forms.ValidationError('Enter a JSON object, e.g. {"Authorization": "Bearer ..."}.') from None
        if not isinstance(parsed, dict):
            raise forms.ValidationError("Enter a JSON object of header names to values.")
        return parsed


class McpServerForm(forms.ModelForm):
    headers = HeadersField(
        required=False,
        label="HTTP headers (credentials)",
        help_text='Write-only JSON object, e.g. {"Authorization": "Bearer ..."}. Leave empty to keep the stored ones.',
    )
    clear_headers = forms.BooleanField(label="Remove the stored headers", required=False)

    class Meta:
        model = McpServer
        fields = ("organization", *services.SERVER_SETTABLE)


@admin.register(McpServer)
class McpServerAdmin(TenantScopedAdmin):
    form = McpServerForm
    delete_action = DELETE
    list_display = ("name", "organization", "transport", "endpoint", "headers_state", "price_per_call", "enabled")
    list_filter = ("transport", "enabled", ("organization", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name", "url")
    list_select_related = ("organization",)
    fieldsets = (
        (None, {"fields": ("name", "organization", "enabled")}),
        ("Upstream", {"fields": ("transport", "url", "headers", "clear_headers", "headers_state", "timeout_seconds")}),
        ("stdio (superusers only)", {"classes": ("collapse",), "fields": ("command", "args")}),
        ("Price (USD per call)", {"fields": ("price_per_call", "tool_prices")}),
    )

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "url":
            kwargs["assume_scheme"] = "https"
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="headers")
    def headers_state(self, obj) -> str:
        return "set" if obj is not None and obj.has_headers else "not set"

    @admin.display(description="endpoint")
    def endpoint(self, obj) -> str:
        return obj.url if obj.transport != "stdio" else f"stdio: {obj.command}"

    def get_readonly_fields(self, request, obj=None):
        return ("headers_state", "organization") if obj is not None else ("headers_state",)

    def service_save(self, request, form, change):
        data = form.cleaned_data
        headers = {} if data.get("clear_headers") else data.get("headers")
        if change:
            values = self.changed_values(form, services.SERVER_SETTABLE)
            return services.mcp_server_update(
                actor=self.actor(request), server=self.original(form), headers=headers, **values
            )
        values = self.form_values(form, services.SERVER_SETTABLE)
        return services.mcp_server_create(
            actor=self.actor(request), organization=data.get("organization"), headers=headers, **values
        )

    def service_delete(self, request, obj) -> None:
        services.mcp_server_delete(actor=self.actor(request), server=obj)


class McpGrantForm(forms.ModelForm):
    tools = ModelListField(help_text="Comma-separated tool names of the server (without its prefix).")

    class Meta:
        model = McpGrant
        fields = ("server", "team", "key", *services.GRANT_SETTABLE)


@admin.register(McpGrant)
class McpGrantAdmin(TenantScopedAdmin):
    form = McpGrantForm
    delete_action = DELETE
    list_display = ("server", "team", "key", "all_tools", "tools", "tool_calls_per_minute", "max_parallel_tool_calls")
    list_filter = ("all_tools", ("server", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("server", "team", "key")
    raw_id_fields = ("key",)

    def get_readonly_fields(self, request, obj=None):
        return ("server", "team", "key") if obj is not None else ()

    def service_save(self, request, form, change):
        if change:
            values = self.changed_values(form, services.GRANT_SETTABLE)
            return services.mcp_grant_update(actor=self.actor(request), grant=self.original(form), **values)
        data = form.cleaned_data
        values = self.form_values(form, services.GRANT_SETTABLE)
        return services.mcp_grant_create(
            actor=self.actor(request), server=data["server"], team=data.get("team"), key=data.get("key"), **values
        )

    def service_delete(self, request, obj) -> None:
        services.mcp_grant_delete(actor=self.actor(request), grant=obj)
