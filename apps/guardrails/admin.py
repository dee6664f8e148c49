"""Guardrail policies in the admin: tenant-scoped like every other admin, validated by the service."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin

from apps.guardrails.models import GuardrailPolicy
from apps.guardrails.services import guardrail_policy_delete, guardrail_policy_set
from apps.teams.admin_base import TenantScopedAdmin
from apps.teams.models import Organization
from apps.teams.scoping import CHANGE, VIEW

EXAMPLE = {
    "pii": {"entities": {"email": "mask", "payment_card": "block", "secret": "block"}, "answers": True},
    "deny": {"keywords": ["project falcon"], "topics": {"weapons": ["rifle", "explosive"]}},
    "max_input_chars": 20000,
}


class GuardrailPolicyForm(forms.ModelForm):
    config = forms.JSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 14, "cols": 90, "style": "font-family: monospace"}),
        help_text="Sections: pii, deny, max_input_chars, moderation, prompt_injection (docs/guardrails.md). "
        f"A section set to null switches the inherited one off. Example: {json.dumps(EXAMPLE)}",
    )

    class Meta:
        model = GuardrailPolicy
        fields = ("organization", "team", "key", "config")


@admin.register(GuardrailPolicy)
class GuardrailPolicyAdmin(TenantScopedAdmin):
    form = GuardrailPolicyForm
    delete_action = CHANGE
    list_display = ("__str__", "scope", "organization", "team", "sections", "updated_at")
    list_select_related = ("organization", "team", "key")
    search_fields = ("organization__name", "team__name", "key__alias")
    raw_id_fields = ("key",)

    @admin.display(description="sections")
    def sections(self, obj: GuardrailPolicy) -> str:
        return ", ".join(sorted(obj.config)) if isinstance(obj.config, dict) else ""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "organization":
            kwargs["queryset"] = Organization.objects.restrict(request.user, VIEW)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return ("organization", "team", "key") if obj is not None else ()

    def service_save(self, request, form, change: bool):
        data = form.cleaned_data
        config = data.get("config")
        if change:
            original = self.original(form)
            scope = {"organization": original.organization, "team": original.team, "key": original.key}
        else:
            scope = {"organization": data.get("organization"), "team": data.get("team"), "key": data.get("key")}
        return guardrail_policy_set(actor=self.actor(request), config={} if config is None else config, **scope)

    def service_delete(self, request, obj) -> None:
        guardrail_policy_delete(actor=self.actor(request), policy=obj)
