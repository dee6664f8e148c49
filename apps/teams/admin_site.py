"""The admin site every ModelAdmin is registered on: list filters are limited to what each changelist offers.

Django applies any query-string parameter of a changelist that names a local field as a filter
(``ModelAdmin.lookup_allowed`` only polices lookups across relations), and ``ChangeList.get_filters``
hands whatever no list filter consumed to ``queryset.filter()``. So ``?password__regex=^argon2`` on the
people list, or ``?credentials_encrypted__startswith=gAAAA`` on the deployments, answers "is there a row
like this" one character at a time: a hash or ciphertext can be read out by bisection.

Here a changelist accepts only the parameters it offers: those its list filters consume, its date
hierarchy, search (``q``), ordering (``o``), pagination (``p``), ``all``, ``_facets``, ``_popup``,
``_to_field`` and the error flag ``e`` (Django strips those before filtering), plus the fixed
``limit_choices_to`` pairs of raw-id popups. Anything else is a 400 (``DisallowedModelAdminLookup``)
before any query runs, for superusers too: nobody needs hashes through a filter.

It is enforced in one place, the site's ``register``: every ModelAdmin, ours or a third party's
(django-celery-beat, axes, auth's Group), is registered through it and gets ``StrictFiltersMixin``.
A system check (``gateway.E001``) refuses to start if something was registered around it.

This module is loaded while the app registry is being populated (it holds the admin's AppConfig),
so it imports no models at import time.
"""

from __future__ import annotations

from functools import cache

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.contrib.admin.exceptions import DisallowedModelAdminLookup
from django.contrib.admin.sites import AdminSite, all_sites
from django.contrib.admin.widgets import url_params_from_lookup_dict
from django.core import checks
from django.http import Http404, HttpResponseRedirect
from django.urls import path


class StrictFiltersChangeListMixin:
    """A ChangeList that refuses query-string filters no list filter or date hierarchy consumed."""

    def get_filters(self, request):
        requested = set(self.get_filters_params())
        filter_specs, has_filters, remaining, may_have_duplicates, has_active_filters = super().get_filters(request)
        # List filters pop the parameters they handle; the date hierarchy pops its year/month/day and adds
        # its own bounds. What the client sent and is still here was offered by nobody.
        popup_pairs = popup_lookup_pairs(self.model)
        for key in sorted(requested & set(remaining)):
            values = self.filter_params.get(key, [])
            if not values or any((key, value) not in popup_pairs for value in values):
                raise DisallowedModelAdminLookup(f"Filtering by {key} is not offered on this list.")
        return filter_specs, has_filters, remaining, may_have_duplicates, has_active_filters


def popup_lookup_pairs(model) -> set[tuple[str, str]]:
    """The (parameter, value) pairs a raw-id popup adds for a foreign key's ``limit_choices_to``.

    They are fixed in code, so they cannot be used to probe; Django's ``lookup_allowed`` lets them
    through for the same reason.
    """
    pairs: set[tuple[str, str]] = set()
    for fk_lookup in model._meta.related_fkey_lookups:
        if callable(fk_lookup):
            fk_lookup = fk_lookup()
        pairs.update(url_params_from_lookup_dict(fk_lookup).items())
    return pairs


@cache
def strict_changelist(changelist_class: type) -> type:
    if issubclass(changelist_class, StrictFiltersChangeListMixin):
        return changelist_class
    return type(f"Strict{changelist_class.__name__}", (StrictFiltersChangeListMixin, changelist_class), {})


class StrictFiltersMixin:
    """Makes a ModelAdmin's changelist refuse filters it does not offer (mixed in by ``GatewayAdminSite``)."""

    def get_changelist(self, request, **kwargs):
        # Wraps whatever ChangeList the admin (or a third-party subclass) uses, rather than replacing it.
        return strict_changelist(super().get_changelist(request, **kwargs))


@cache
def strict_admin_class(admin_class: type[admin.ModelAdmin]) -> type[admin.ModelAdmin]:
    if issubclass(admin_class, StrictFiltersMixin):
        return admin_class
    return type(
        admin_class.__name__,
        (StrictFiltersMixin, admin_class),
        {"__module__": admin_class.__module__, "__qualname__": admin_class.__qualname__},
    )


class PlatformOnlyMixin:
    """A third-party admin (auth's Group, axes, django-celery-beat...) is the platform's, whatever permissions say.

    Those admins ask ``user.has_perm``, which knows nothing about tenants: an organization admin who was
    given model permissions (a group, a careless grant) would see login records of every tenant, the
    periodic tasks or the permission groups in the side bar, and could open them. Tenant-aware admins are
    the project's own (``apps.*``), which decide through ``may()``/``restrict()``; everything else answers
    to superusers only.
    """

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser and super().has_module_permission(request)

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser and super().has_view_permission(request, obj)

    def has_add_permission(self, request, *args) -> bool:
        return request.user.is_active and request.user.is_superuser and super().has_add_permission(request, *args)

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser and super().has_delete_permission(request, obj)


def is_project_admin(admin_class: type) -> bool:
    return admin_class.__module__.split(".", 1)[0] == "apps"


@cache
def platform_only_class(admin_class: type[admin.ModelAdmin]) -> type[admin.ModelAdmin]:
    if is_project_admin(admin_class) or issubclass(admin_class, PlatformOnlyMixin):
        return admin_class
    return type(
        admin_class.__name__,
        (PlatformOnlyMixin, admin_class),
        {"__module__": admin_class.__module__, "__qualname__": admin_class.__qualname__},
    )


class GatewayAdminSite(AdminSite):
    """The default admin site (``admin.site``), so third-party ``admin.site.register`` calls come here too."""

    # No public site: Django's header shows "View site" linking to site_url ("/", a 404 here) unless it is None.
    site_url = None

    def register(self, model_or_iterable, admin_class=None, **options):
        admin_class = platform_only_class(strict_admin_class(admin_class or admin.ModelAdmin))
        super().register(model_or_iterable, admin_class, **options)

    def get_urls(self):
        urls = super().get_urls()
        # Django's "view on site" shortcut answers "doesn't exist" for a missing id and "has no
        # get_absolute_url" for an existing one, in any tenant. Ours looks the object up through its
        # ModelAdmin (tenant-scoped) and answers one 404 for everything it cannot show.
        for index, pattern in enumerate(urls):
            if getattr(pattern, "name", None) == "view_on_site":
                urls[index] = path(
                    "r/<path:content_type_id>/<path:object_id>/",
                    self.admin_view(self.view_on_site),
                    name="view_on_site",
                )
        return urls

    def view_on_site(self, request, content_type_id, object_id):
        from django.contrib.contenttypes.models import ContentType

        try:
            model = ContentType.objects.get_for_id(int(content_type_id)).model_class()
        except (ContentType.DoesNotExist, ValueError, OverflowError):
            model = None
        model_admin = self._registry.get(model)
        obj = model_admin.get_object(request, object_id) if model_admin is not None else None
        visible = obj is not None and model_admin.has_view_or_change_permission(request, obj)
        if not visible or not hasattr(obj, "get_absolute_url"):
            raise Http404("No page to show.")  # the same answer for missing, out of scope and pageless objects
        return HttpResponseRedirect(obj.get_absolute_url())


class GatewayAdminConfig(AdminConfig):
    """``django.contrib.admin`` with ``GatewayAdminSite`` as ``admin.site`` (named in INSTALLED_APPS)."""

    default_site = "apps.teams.admin_site.GatewayAdminSite"

    def ready(self):
        super().ready()
        checks.register(check_every_admin_is_strict, checks.Tags.admin)


def check_every_admin_is_strict(app_configs=None, **kwargs):
    """A ModelAdmin that reached a site without ``register`` (or a second, plain AdminSite) would filter on anything."""
    errors = []
    for site in all_sites:
        for model, model_admin in site._registry.items():
            if not isinstance(model_admin, StrictFiltersMixin):
                errors.append(
                    checks.Error(
                        f"{type(model_admin).__qualname__} for {model._meta.label} on site {site.name!r} "
                        "accepts list filters it does not offer.",
                        hint="Register it on admin.site (apps.teams.admin_site.GatewayAdminSite).",
                        obj=type(model_admin),
                        id="gateway.E001",
                    )
                )
    return errors
