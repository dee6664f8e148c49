"""Pieces of the key admin: the secret-once page and the changelist filters."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import partial

from django.contrib import admin
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from apps.keys.selectors import KEY_STATUSES, keys_allowing_model, keys_with_status

MAX_MODEL_FILTER_KEYS = 5000


# The session slot holding secrets between the POST that issued them and the one GET that shows them.
ISSUED_SESSION_KEY = "gateway_issued_secrets"


@dataclass(frozen=True)
class IssuedRow:
    label: str
    change_url: str | None


def secret_once_redirect(
    model_admin, request, issued: list[tuple[IssuedRow, str]], *, title: str, object_label: str
) -> HttpResponseRedirect:
    """POST/redirect/GET for a freshly issued secret: reloading the page that shows it issues nothing.

    The secrets wait in the server-side session (never in the URL, a cookie or a log) under a random
    token, and the GET that shows them removes them: a reload, the back button or a second tab finds
    them gone. Keyed per issue so two creations in two tabs do not overwrite each other.
    """
    token = secrets.token_urlsafe(16)
    pending = dict(request.session.get(ISSUED_SESSION_KEY) or {})
    pending[token] = {
        "title": title,
        "object_label": object_label,
        "rows": [[row.label, row.change_url, secret] for row, secret in issued],
    }
    request.session[ISSUED_SESSION_KEY] = pending
    opts = model_admin.model._meta
    return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_issued", args=[token]))


def secret_once_view(model_admin, request, token: str) -> TemplateResponse:
    """The one page that ever shows a secret: takes it out of the session, so it is shown exactly once."""
    pending = dict(request.session.get(ISSUED_SESSION_KEY) or {})
    entry = pending.pop(token, None)
    if entry is not None:
        request.session[ISSUED_SESSION_KEY] = pending
    opts = model_admin.model._meta
    issued = [(IssuedRow(label, url), secret) for label, url, secret in (entry or {}).get("rows", [])]
    context = {
        **model_admin.admin_site.each_context(request),
        "title": entry["title"] if entry else "Secret already shown",
        "issued": issued,
        "object_label": entry["object_label"] if entry else "",
        "opts": opts,
        "back_url": reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"),
        "back_label": opts.verbose_name_plural.capitalize(),
    }
    response = TemplateResponse(request, "keys/admin/secret_once.html", context, status=200 if entry else 410)
    response["Cache-Control"] = "no-store"
    return response


class SecretOnceAdminMixin:
    """Adds ``<model>/issued/<token>/``, the GET half of ``secret_once_redirect``, to a ModelAdmin."""

    def get_urls(self):
        opts = self.model._meta
        view = self.admin_site.admin_view(partial(secret_once_view, self))
        issued = path("issued/<str:token>/", view, name=f"{opts.app_label}_{opts.model_name}_issued")
        return [issued, *super().get_urls()]


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
