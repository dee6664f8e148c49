"""Admin for log sinks: tenant-scoped like every page, the secret write-only, the delivery status read-only."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError

from apps.sinks import services
from apps.sinks.models import LogSink
from apps.teams.admin_base import TenantScopedAdmin
from apps.teams.scoping import DELETE

STATUS_FIELDS = ("secret_status", "delivered_count", "dropped_count", "last_success_at", "last_error_at", "last_error")


class LogSinkForm(forms.ModelForm):
    """``secret`` is never rendered back: the widget starts empty and an empty submit keeps the stored one."""

    secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. HTTP: the HMAC signing key. Langfuse: the secret key. S3: the secret access key. "
        "Leave empty to keep the stored one.",
    )
    clear_secret = forms.BooleanField(label="Remove the stored secret", required=False)

    class Meta:
        model = LogSink
        # url's form field comes from the admin (https as the default scheme), not from this class.
        fields = ("organization", *(name for name in services.SINK_SETTABLE if name != "url"))


@admin.register(LogSink)
class LogSinkAdmin(TenantScopedAdmin):
    form = LogSinkForm
    change_action = "log_sink.manage"
    delete_action = DELETE
    list_display = ("name", "kind", "organization", "team", "enabled", "delivered_count", "dropped_count", "health")
    list_filter = ("kind", "enabled", ("organization", admin.RelatedOnlyFieldListFilter))
    search_fields = ("name",)
    list_select_related = ("organization", "team")
    fieldsets = (
        (None, {"fields": ("name", "kind", "organization", "team", "enabled")}),
        ("Destination", {"fields": ("url", "access_id", "secret", "clear_secret", "bucket", "prefix", "region")}),
        ("Records", {"fields": ("capture_bodies", "batch_size")}),
        ("Delivery status", {"fields": STATUS_FIELDS}),
    )

    @admin.display(description="secret")
    def secret_status(self, obj) -> str:
        return "set" if obj is not None and obj.has_secret else "not set"

    @admin.display(description="status")
    def health(self, obj) -> str:
        if obj.last_error_at and (obj.last_success_at is None or obj.last_error_at > obj.last_success_at):
            return f"error: {obj.last_error[:80]}"
        return "ok" if obj.last_success_at else "no delivery yet"

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "url":
            kwargs["assume_scheme"] = "https"
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return (*STATUS_FIELDS, "organization", "team") if obj is not None else STATUS_FIELDS

    def init_form(self, form, request, obj) -> None:
        if "organization" in form.fields:
            form.fields["organization"].required = False
            form.fields["organization"].help_text = "Empty for a team's sink: the team's organization."

    def service_save(self, request, form, change):
        data = form.cleaned_data
        secret = "" if data.get("clear_secret") else (data.get("secret") or None)
        if change:
            values = self.changed_values(form, services.SINK_SETTABLE)
            return services.log_sink_update(
                actor=self.actor(request), sink=self.original(form), secret=secret, **values
            )
        values = self.form_values(form, services.SINK_SETTABLE)
        team = values.pop("team", None)
        organization = data.get("organization") or (team.organization if team else None)
        if organization is None:
            raise ValidationError({"organization": "Choose the organization or a team."})
        return services.log_sink_create(
            actor=self.actor(request), organization=organization, team=team, secret=secret, **values
        )

    def service_delete(self, request, obj) -> None:
        services.log_sink_delete(actor=self.actor(request), sink=obj)
