"""Alert channels (URLs write-only) and the alerts sent, in the admin; tenant-scoped like everything else."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from apps.monitoring.models import AlertChannel, AlertEvent, AlertRule
from apps.monitoring.services import CHANNEL_FIELDS, alert_channel_delete, alert_channel_save
from apps.teams.admin_base import TenantScopedAdmin
from apps.teams.models import Organization
from apps.teams.scoping import DELETE, VIEW


class AlertChannelForm(forms.ModelForm):
    """``url`` is never rendered back: the widget starts empty and an empty submit keeps the stored URL."""

    url = forms.CharField(
        label="URL",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Webhook or Slack incoming-webhook URL. Write-only: leave empty to keep the stored one.",
    )
    rules = forms.MultipleChoiceField(
        choices=AlertRule.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Nothing ticked: every kind of alert.",
    )

    class Meta:
        model = AlertChannel
        fields = CHANNEL_FIELDS


@admin.register(AlertChannel)
class AlertChannelAdmin(TenantScopedAdmin):
    form = AlertChannelForm
    delete_action = DELETE
    list_display = ("name", "kind", "organization", "team", "url_set", "enabled", "last_status", "last_sent_at")
    list_filter = ("kind", "enabled")
    search_fields = ("name",)
    list_select_related = ("organization", "team")
    fields = (*CHANNEL_FIELDS[:4], "rules", "recipients", "url", "url_set", "enabled", "last_status", "last_sent_at")
    readonly_fields = ("url_set", "last_status", "last_sent_at")

    @admin.display(description="URL")
    def url_set(self, obj) -> str:
        return "set" if obj is not None and obj.has_url else "not set"

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "organization":
            # A team admin picks their team's organization (seen, not administered); the service checks the pair.
            kwargs["queryset"] = Organization.objects.restrict(request.user, VIEW)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def service_save(self, request, form, change: bool):
        data = {name: form.cleaned_data.get(name) for name in CHANNEL_FIELDS}
        data["rules"] = list(data["rules"] or [])
        original = self.original(form) if change else None
        return alert_channel_save(
            actor=self.actor(request), channel=original, url=form.cleaned_data.get("url") or None, **data
        )

    def service_delete(self, request, obj) -> None:
        alert_channel_delete(actor=self.actor(request), channel=obj)


@admin.register(AlertEvent)
class AlertEventAdmin(TenantScopedAdmin):
    """Sent alerts: what was said and what each channel answered; never edited."""

    list_display = ("created_at", "rule", "subject", "window_id", "title", "organization", "team")
    list_filter = ("rule",)
    search_fields = ("subject", "title")
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request)
