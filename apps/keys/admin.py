"""Admin for virtual keys and API tokens. Secrets appear once, on the page that answers the create/rotate."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import ClassVar

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST

from apps.keys import services
from apps.keys.admin_parts import IssuedRow, KeyModelFilter, KeyStatusFilter, SecretOnceAdminMixin, secret_once_redirect
from apps.keys.models import ApiToken, VirtualKey
from apps.teams.admin_base import ModelListField, TenantScopedAdmin, truncated
from apps.teams.limits import LIMIT_FIELDS
from apps.teams.models import User
from apps.teams.scoping import CHANGE, may
from apps.teams.selectors import teams_for_new_keys


@admin.register(VirtualKey)
class VirtualKeyAdmin(SecretOnceAdminMixin, TenantScopedAdmin):
    # Fits the content area at 1440 and 1024 px (issue 21): the prefix under the alias instead of its own
    # column, the model list cut to a line (whole list in its tooltip).
    list_display = ("key_display", "team", "user", "status", "models_display", "max_budget", "last_used_at")
    list_filter = (KeyStatusFilter, ("team", admin.RelatedOnlyFieldListFilter), KeyModelFilter, "budget_duration")
    search_fields = ("alias", "prefix", "user__username", "team__name")
    list_select_related = ("team", "team__organization", "user")
    actions = ("revoke_keys", "rotate_keys", "block_keys", "unblock_keys")
    service_error_aliases = {"models": "allowed_models"}
    # Other apps (spend, dashboard) may append read-only panels: add a method name here and to a fieldset.
    usage_fields: tuple[str, ...] = ("usage",)
    fieldsets = (
        (None, {"fields": ("alias", "team", "user", "allowed_models", "expires_at", "blocked")}),
        ("Limits and budget", {"fields": (*LIMIT_FIELDS, "budget_duration")}),
        (
            "Advanced",
            {
                "classes": ("collapse",),
                "fields": (
                    "model_limits",
                    "priority",
                    "session_max_budget",
                    "session_max_iterations",
                    "budget_clamp_max_tokens",
                    "metadata",
                ),
            },
        ),
        ("Response cache", {"fields": ("cache_ttl_seconds",)}),
    )
    info_fieldset = (
        "Key",
        {"fields": ("prefix", "status", "organization", "created_by", "created_at", "last_used_at", "revoked_at")},
    )
    info_fields = ("prefix", "status", "organization", "created_by", "created_at", "last_used_at", "revoked_at")

    # Read-only panels shown in the "usage" field, contributed by apps above keys (the console's spend and
    # limits panel, apps/console/admin.py) so keys never imports them. Each takes the key and returns HTML.
    usage_panels: ClassVar[list[Callable[[VirtualKey], str]]] = []

    @classmethod
    def usage_panel_add(cls, panel: Callable[[VirtualKey], str]) -> None:
        if panel not in cls.usage_panels:
            cls.usage_panels.append(panel)

    @admin.display(description="usage")
    def usage(self, obj):
        # format_html_join escapes a plain string and keeps a panel's SafeString as it is.
        return format_html_join("", "{}", ((panel(obj),) for panel in self.usage_panels))

    change_form_template = "keys/admin/virtualkey_change_form.html"
    KEY_VERBS = {"revoke": "Revoke", "rotate": "Rotate", "block": "Block", "unblock": "Unblock"}

    def get_urls(self):
        def view(verb):
            return self.admin_site.admin_view(require_POST(partial(self.key_verb_view, verb=verb)))

        custom = [
            path(f"<path:object_id>/{verb}/", view(verb), name=f"keys_virtualkey_{verb}") for verb in self.KEY_VERBS
        ]
        return custom + super().get_urls()

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        key = self.get_object(request, unquote(object_id))
        if key is not None and key.revoked_at is None and self.has_change_permission(request, key):
            verbs = ["rotate", "unblock" if key.blocked else "block", "revoke"]
            extra_context["key_buttons"] = [(verb, self.KEY_VERBS[verb]) for verb in verbs]
        return super().change_view(request, object_id, form_url, extra_context)

    def key_verb_view(self, request, object_id, *, verb: str):
        """The change page's buttons: one key, one service call; rotate answers with the new secret, once."""
        key = self.get_object(request, unquote(object_id))
        if key is None:
            raise Http404
        if not self.has_change_permission(request, key):
            raise PermissionDenied
        actor = self.actor(request)
        try:
            if verb == "rotate":
                issued = services.key_rotate(actor=actor, key=key)
                return secret_once_redirect(
                    self,
                    request,
                    [(self._row(issued.key), issued.secret)],
                    title="Key rotated",
                    object_label="Virtual key",
                )
            if verb == "revoke":
                services.key_revoke(actor=actor, key=key)
            else:
                services.key_set_blocked(actor=actor, key=key, blocked=verb == "block")
        except (ValidationError, PermissionDenied) as exc:
            self.message_user(
                request, f"{self.KEY_VERBS[verb]}: {' '.join(getattr(exc, 'messages', [str(exc)]))}", messages.ERROR
            )
        else:
            self.message_user(request, f"{self.KEY_VERBS[verb]}: done.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:keys_virtualkey_change", args=[key.pk]))

    @admin.display(description="models")
    def models_display(self, obj) -> str:
        return truncated(", ".join(obj.allowed_models)) if obj.allowed_models else "(team's)"

    @admin.display(description="key", ordering="alias")
    def key_display(self, obj) -> str:
        if not obj.alias:
            return obj.prefix
        return format_html('{}<br><span class="gw-small">{}</span>', obj.alias, obj.prefix)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.fieldsets
        usage = ("Usage and remaining limits", {"fields": self.usage_fields})
        return (self.info_fieldset, usage, *self.fieldsets)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (*self.info_fields, "team", "user", *self.usage_fields)  # a key never moves to another team or owner

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "allowed_models":
            return ModelListField(label="Models")
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "team":
            kwargs["queryset"] = teams_for_new_keys(request.user)
        elif db_field.name == "user":
            kwargs["queryset"] = User.objects.restrict(request.user, CHANGE).order_by("username")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def service_save(self, request, form, change):
        fields = (*services.KEY_SETTABLE, "blocked")
        if change:
            return services.key_update(
                actor=self.actor(request), key=self.original(form), **self.changed_values(form, fields)
            )
        values = self.form_values(form, services.KEY_SETTABLE)
        values = {k: v for k, v in values.items() if v not in (None, "") or k == "alias"}
        issued = services.key_create(
            actor=self.actor(request), team=form.cleaned_data["team"], user=form.cleaned_data.get("user"), **values
        )
        issued.key._issued_secret = issued.secret
        return issued.key

    def response_add(self, request, obj, post_url_continue=None):
        secret = getattr(obj, "_issued_secret", None)
        if secret is None:
            return super().response_add(request, obj, post_url_continue)
        return secret_once_redirect(
            self, request, [(self._row(obj), secret)], title="Key created", object_label="Virtual key"
        )

    def _row(self, key: VirtualKey) -> IssuedRow:
        return IssuedRow(label=str(key), change_url=reverse("admin:keys_virtualkey_change", args=[key.pk]))

    def _changeable(self, request, queryset):
        return queryset.restrict(request.user, CHANGE)

    @admin.action(description="Revoke selected keys (permanent)", permissions=["change"])
    def revoke_keys(self, request, queryset):
        actor = self.actor(request)
        self.run_per_object(
            request, self._changeable(request, queryset), "Revoked", lambda k: services.key_revoke(actor=actor, key=k)
        )

    @admin.action(description="Rotate selected keys (new secrets, shown once)", permissions=["change"])
    def rotate_keys(self, request, queryset):
        actor = self.actor(request)
        issued: list[tuple[IssuedRow, str]] = []

        def rotate(key):
            result = services.key_rotate(actor=actor, key=key)
            issued.append((self._row(result.key), result.secret))

        self.run_per_object(request, self._changeable(request, queryset), "Rotated", rotate)
        if not issued:
            return None
        return secret_once_redirect(self, request, issued, title="Keys rotated", object_label="Virtual key")

    @admin.action(description="Block selected keys", permissions=["change"])
    def block_keys(self, request, queryset):
        actor = self.actor(request)
        self.run_per_object(
            request,
            self._changeable(request, queryset),
            "Blocked",
            lambda k: services.key_set_blocked(actor=actor, key=k, blocked=True),
        )

    @admin.action(description="Unblock selected keys", permissions=["change"])
    def unblock_keys(self, request, queryset):
        actor = self.actor(request)
        self.run_per_object(
            request,
            self._changeable(request, queryset),
            "Unblocked",
            lambda k: services.key_set_blocked(actor=actor, key=k, blocked=False),
        )


@admin.register(ApiToken)
class ApiTokenAdmin(SecretOnceAdminMixin, TenantScopedAdmin):
    """Personal tokens for the REST API. Each acts with its owner's tenant rights."""

    list_display = ("name", "prefix", "user", "created_at", "last_used_at", "expires_at")
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user",)
    fields = ("name", "expires_at")
    readonly_fields = ()

    def get_fields(self, request, obj=None):
        if obj is None:
            return self.fields
        return ("name", "prefix", "user", "created_at", "last_used_at", "expires_at")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("name", "prefix", "user", "created_at", "last_used_at", "expires_at")

    def has_add_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # tokens are immutable: delete and create another

    def has_delete_permission(self, request, obj=None) -> bool:
        if obj is None:
            return self.has_add_permission(request)
        return may(request.user, "api_token.delete", obj)

    def service_save(self, request, form, change):
        token, secret = services.api_token_create(
            actor=self.actor(request),
            user=request.user,
            name=form.cleaned_data["name"],
            expires_at=form.cleaned_data.get("expires_at"),
        )
        token._issued_secret = secret
        return token

    def service_delete(self, request, obj) -> None:
        services.api_token_delete(actor=self.actor(request), token=obj)

    def response_add(self, request, obj, post_url_continue=None):
        row = IssuedRow(label=str(obj), change_url=None)
        return secret_once_redirect(
            self, request, [(row, obj._issued_secret)], title="API token created", object_label="Token"
        )
