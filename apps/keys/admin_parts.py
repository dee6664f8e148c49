"""Pieces of the key admin: the secret-once page and the changelist filters."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import reverse

from apps.keys.selectors import KEY_STATUSES, keys_allowing_model, keys_with_status

MAX_MODEL_FILTER_KEYS = 5000


@dataclass(frozen=True)
class IssuedRow:
    label: str
    change_url: str | None


def secret_once_response(model_admin, request, issued: list[tuple[IssuedRow, str]], *, title: str, object_label: str):
    """The one page that ever shows a secret: rendered as the POST's answer, stored nowhere, never cached."""
    opts = model_admin.model._meta
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "issued": issued,
        "object_label": object_label,
        "opts": opts,
        "back_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
        "back_label": opts.verbose_name_plural.capitalize(),
    }
    response = TemplateResponse(request, "keys/admin/secret_once.html", context)
    response["Cache-Control"] = "no-store"
    return response


class KeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [(status, status.capitalize()) for status in KEY_STATUSES]

    def queryset(self, request, queryset):
        return keys_with_status(queryset, self.value())


class KeyModelFilter(admin.SimpleListFilter):
    """Keys allowed a given model: explicitly listed, or unrestricted (empty list = the team's models)."""

    title = "model"
    parameter_name = "model"

    def lookups(self, request, model_admin):
        names: set[str] = set()
        rows = model_admin.get_queryset(request).values_list("allowed_models", flat=True)[:MAX_MODEL_FILTER_KEYS]
        for models in rows:
            names.update(str(m) for m in models or [])
        return [(name, name) for name in sorted(names)]

    def queryset(self, request, queryset):
        return keys_allowing_model(queryset, self.value())
