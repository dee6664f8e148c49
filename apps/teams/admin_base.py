"""The tenant-scoped ModelAdmin: every admin page reaches data through ``.restrict`` and writes through services.

Permissions come from memberships (apps/teams/scoping.py), not from Django model permissions, so a
staff user who is a team admin can use the admin without any ``auth.Permission`` rows.

Writes: a service function is the validation (limits within the parent, who may do what), so the
admin runs it where the form validates. Its ``ValidationError`` lands on the form's fields and its
``PermissionDenied`` on the form itself, instead of a 500 after the form was accepted. The whole
change view runs inside one transaction, so nothing half-done survives a later error.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import FieldDoesNotExist, PermissionDenied, ValidationError
from django.db.models import Q
from django.utils.html import format_html
from django.utils.safestring import SafeString

from apps.teams.audit import Actor, actor_from_request
from apps.teams.scoping import CHANGE, VIEW, may, tenancy_for, tenant_q

NOTHING = Q(pk__in=[])


class ModelListField(forms.CharField):
    """Model names typed as "gpt-4o, claude-3-5-haiku" in the admin, stored as a JSON list."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", "Comma-separated model names; empty means every model the parent allows.")
        kwargs.pop("encoder", None)
        kwargs.pop("decoder", None)
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return ", ".join(str(v) for v in value)
        return value

    def to_python(self, value):
        if isinstance(value, list | tuple):
            return [str(v) for v in value]
        text = super().to_python(value) or ""
        return [name.strip() for name in text.replace("\n", ",").split(",") if name.strip()]

    def has_changed(self, initial, data):
        return self.to_python(initial or []) != self.to_python(data)


def truncated(text: str) -> SafeString:
    """A changelist cell cut to one line with an ellipsis (admin.css ``.gw-truncate``), its whole text as a
    tooltip: long values (model lists, changed fields) stop widening the table past the content area."""
    return format_html('<span class="gw-truncate" title="{}">{}</span>', text, text)


def reaches_any(model, user, action: str) -> bool:
    """Whether ``user`` may ``action`` at least some rows of ``model`` (no query: decided from memberships)."""
    if not getattr(user, "is_active", False) or not getattr(user, "is_staff", False):
        return False
    tenancy = tenancy_for(user)
    if not (tenancy.is_superuser or tenancy.org_view or tenancy.team_view):
        return False  # staff without any membership: nothing of any tenant's is theirs to see
    q = tenant_q(model.TENANT_PATHS, tenancy, action)
    return q is None or q != NOTHING


def apply_service_errors(form: forms.BaseForm, exc: ValidationError, aliases: dict[str, str] | None = None) -> None:
    """Put a service's field errors on the matching form fields (the rest on the form itself)."""
    aliases = aliases or {}
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for name, errors in exc.message_dict.items():
        field = aliases.get(name, name)
        for message in errors:
            if field in form.fields:
                form.add_error(field, message)
            else:
                form.add_error(None, message if name == "__all__" else f"{name}: {message}")


class TenantScopedAdmin(admin.ModelAdmin):
    """Base for every ModelAdmin of tenant data; subclasses implement ``service_save`` (maybe ``service_delete``)."""

    # Which action the user needs on a related model to pick it in a foreign-key dropdown.
    fk_choice_action = CHANGE
    # What the change and delete pages ask ``may`` (apps/teams/scoping.py): the same rule the services
    # decide by, so the admin never offers a form or a delete the service would refuse. No delete_action:
    # nothing is deleted here.
    change_action: str = CHANGE
    delete_action: str | None = None
    # Service field names that differ from the form's (e.g. the service says "models", the form "allowed_models").
    service_error_aliases: dict[str, str] = {}
    save_as = False

    # --- what the user sees --------------------------------------------------------------------
    def get_queryset(self, request):
        return super().get_queryset(request).restrict(request.user, VIEW)

    def actor(self, request) -> Actor:
        return actor_from_request(request, "admin")

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request) or self.has_add_permission(request)

    def has_view_permission(self, request, obj=None) -> bool:
        if obj is None:
            return reaches_any(self.model, request.user, VIEW)
        return may(request.user, VIEW, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        if obj is None:
            return reaches_any(self.model, request.user, self.change_action)
        return may(request.user, self.change_action, obj)

    def has_add_permission(self, request) -> bool:
        return reaches_any(self.model, request.user, CHANGE)

    def has_delete_permission(self, request, obj=None) -> bool:
        if self.delete_action is None:
            return False
        if obj is None:
            return reaches_any(self.model, request.user, self.delete_action)
        return may(request.user, self.delete_action, obj)

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        widget = getattr(formfield, "widget", None)
        widget = getattr(widget, "widget", widget)  # inside the related-object wrapper, if any
        if isinstance(widget, forms.SplitDateTimeWidget):
            # The field's <label> names only the date box: screen readers would announce the time box unnamed.
            label = str(formfield.label or db_field.verbose_name).capitalize()
            for part, name in zip(widget.widgets, ("date", "time"), strict=True):
                part.attrs.setdefault("aria-label", f"{label}: {name}")
        return formfield

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        related = db_field.related_model
        if "queryset" not in kwargs and hasattr(related._default_manager.get_queryset(), "restrict"):
            kwargs["queryset"] = related._default_manager.restrict(request.user, self.fk_choice_action)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        related = db_field.related_model
        if "queryset" not in kwargs and hasattr(related._default_manager.get_queryset(), "restrict"):
            kwargs["queryset"] = related._default_manager.restrict(request.user, self.fk_choice_action)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    # --- writes through services ---------------------------------------------------------------
    def service_save(self, request, form, change: bool):
        """Create or update through the app's service and return the saved object."""
        raise NotImplementedError

    def service_delete(self, request, obj) -> None:
        raise PermissionDenied("This object cannot be deleted here.")

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change=change, **kwargs)
        model_admin = self

        class ServiceForm(form_class):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                model_admin.init_form(self, request, obj)

            def _post_clean(self):
                super()._post_clean()
                if self.errors:
                    return
                try:
                    self.saved_object = model_admin.service_save(request, self, change)
                except ValidationError as exc:
                    apply_service_errors(self, exc, model_admin.service_error_aliases)
                except PermissionDenied as exc:
                    self.add_error(None, str(exc) or "You may not do this.")

        ServiceForm.__name__ = form_class.__name__
        return ServiceForm

    def init_form(self, form, request, obj) -> None:
        """Per-request tweaks of a form instance (its fields are copies: safe to change here)."""

    def save_form(self, request, form, change):
        return form.saved_object

    def save_model(self, request, obj, form, change) -> None:
        """Already saved by the service in the form's validation."""

    def save_related(self, request, form, formsets, change) -> None:
        """Services save everything they own; these admins have no inlines."""

    def delete_model(self, request, obj) -> None:
        self.service_delete(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        for obj in queryset.restrict(request.user, self.delete_action or CHANGE):
            self.service_delete(request, obj)

    def original(self, form):
        """The object as stored, for the service to change.

        Not ``form.instance``: the model form has already copied every posted value onto that one, and
        saving it would store values the service never saw (and never validated).
        """
        if not hasattr(form, "_original"):
            form._original = self.model._default_manager.get(pk=form.instance.pk)
        return form._original

    def form_values(self, form, fields) -> dict:
        """The form's values for ``fields``, ready for a service.

        An emptied JSON box means "nothing" ({} or []), never null: the hot path reads those fields as-is.
        """
        values = {}
        for name in fields:
            if name not in form.cleaned_data:
                continue
            value = form.cleaned_data[name]
            if value is None:
                value = self._json_default(name, value)
            values[name] = value
        return values

    def changed_values(self, form, fields) -> dict:
        """The values that differ from the stored object (compared here: ``form.changed_data`` trusts the
        posted "initial-" inputs of fields with callable defaults)."""
        original = self.original(form)
        return {
            name: value for name, value in self.form_values(form, fields).items() if getattr(original, name) != value
        }

    def _json_default(self, name: str, value):
        try:
            field = self.model._meta.get_field(name)
        except FieldDoesNotExist:
            return value
        if field.get_internal_type() == "JSONField" and not field.null:
            return field.get_default()
        return value

    def run_per_object(self, request, queryset, label: str, func) -> None:
        """Apply ``func(obj)`` to each selected object the user may change; say what happened."""
        done, refused = 0, 0
        for obj in queryset:
            try:
                func(obj)
                done += 1
            except (PermissionDenied, ValidationError):
                refused += 1
        if done:
            self.message_user(request, f"{label}: {done} done.", messages.SUCCESS)
        if refused:
            self.message_user(request, f"{label}: {refused} not allowed or not possible.", messages.WARNING)
