"""Writes for model deployments (admin and REST API). Credentials go in here and never come back out.

Kept separate from the hot path: the /v1 app only reads deployments through its cached registry,
which every write here invalidates after commit.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from apps.keys.invalidation import publish_invalidation
from apps.proxy.models import ModelAlias, ModelDeployment, ModelGroup
from apps.teams.audit import Actor, audit_record
from apps.teams.models import Organization
from apps.teams.scoping import tenancy_for

DEPLOYMENT_SETTABLE = (
    "model_name",
    "provider",
    "model",
    "api_base",
    "api_version",
    "region",
    "input_cost_per_token",
    "output_cost_per_token",
    "cached_input_cost_per_token",
    "cache_creation_input_token_cost",
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "weight",
    "priority",
    "timeout_seconds",
    "extra",
    "enabled",
)

# Words that mark an ``extra`` option as a credential (whole words: "max_output_tokens" is fine).
SECRET_WORDS = frozenset({"key", "apikey", "secret", "password", "passwd", "token", "credential", "credentials"})
# Cloud metadata endpoints hand out the machine's own credentials: never a deployment target.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data"})
LINK_LOCAL_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)


# Fields that end up in a response header (``x-gateway-deployment``) and in log lines: a CR/LF there makes
# the server refuse the whole response, so every answer through the deployment would be a closed connection.
HEADER_SAFE_FIELDS = ("model_name", "model", "api_version", "region")


def control_character_problem(value: object) -> str | None:
    """Why ``value`` may not be a deployment's name/model/version/region, or None when it may."""
    if isinstance(value, str) and any(unicodedata.category(ch) == "Cc" for ch in value):
        return "must not contain control characters (line breaks, tabs, NUL...)."
    return None


def api_base_problem(api_base: str, *, allow_private: bool | None = None) -> str | None:
    """Why ``api_base`` may not be used as an upstream, or None when it may.

    Literal addresses are checked; names are not resolved here (no DNS at validation time),
    so the known metadata host names are refused by name.
    """
    if not api_base:
        return None
    allow_private = settings.PROXY_ALLOW_PRIVATE_UPSTREAMS if allow_private is None else allow_private
    try:
        parts = urlsplit(api_base)
        hostname, _port = parts.hostname, parts.port  # both raise on "http://[::1" or a port out of range
    except ValueError:
        return "must be a well-formed http(s) URL."
    if parts.scheme not in ("http", "https") or not hostname:
        return "must be an http(s) URL with a host."
    if parts.username or parts.password:
        return "must not carry credentials; use api_key."
    host = hostname.rstrip(".").lower()
    if host in METADATA_HOSTS:
        return "cloud metadata endpoints are not allowed."
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    address = mapped or address
    if any(address in network for network in LINK_LOCAL_NETWORKS if network.version == address.version):
        return "link-local and metadata addresses are not allowed."
    if not allow_private and (address.is_private or address.is_loopback or address.is_reserved):
        return "private addresses are not allowed (PROXY_ALLOW_PRIVATE_UPSTREAMS is off)."
    return None


def _authorize(actor: Actor, organization: Organization | None) -> None:
    """Shared deployments (no organization) belong to superusers; an org's own ones to its admins."""
    tenancy = tenancy_for(actor.user)
    if tenancy.is_superuser:
        return
    if organization is not None and organization.pk in tenancy.org_admin:
        return
    raise PermissionDenied("You may not manage these deployments.")


# Set by config files (gateway_apply) besides DEPLOYMENT_SETTABLE; not offered by the admin or the REST API.
CONFIG_SETTABLE = ("name",)


def _validate(values: dict) -> None:
    unknown = set(values) - {*DEPLOYMENT_SETTABLE, *CONFIG_SETTABLE}
    if unknown:
        raise ValidationError({name: "this field cannot be set." for name in sorted(unknown)})
    problems = {name: control_character_problem(values.get(name)) for name in (*HEADER_SAFE_FIELDS, "name")}
    problems["api_base"] = api_base_problem(values.get("api_base") or "")
    problems = {name: problem for name, problem in problems.items() if problem}
    if problems:
        raise ValidationError(problems)
    extra = values.get("extra")
    if extra is not None:
        if not isinstance(extra, dict):
            raise ValidationError({"extra": "must be an object."})
        secretish = sorted(k for k in extra if SECRET_WORDS & set(re.split(r"[^a-z0-9]+", str(k).lower())))
        if secretish:
            # extra is shown back in the admin and API; credentials belong in the write-only api_key.
            raise ValidationError({"extra": f"put credentials in api_key (encrypted, write-only), not {secretish}."})


def _changed_on_commit(reason: str) -> None:
    transaction.on_commit(lambda: publish_invalidation(reason))


def deployment_create(
    *,
    actor: Actor,
    organization: Organization | None = None,
    api_key: str | None = None,
    api_key_ref: str = "",
    **values,
) -> ModelDeployment:
    """``api_key_ref`` names where ``api_key`` came from (``os.environ/NAME``), kept for export; never a value."""
    _authorize(actor, organization)
    _validate(values)
    with transaction.atomic():
        deployment = ModelDeployment(organization=organization, **values)
        if api_key:
            deployment.set_credentials(api_key)
            deployment.credentials_ref = api_key_ref
        deployment.full_clean()
        deployment.save()
        audit_record(
            actor=actor,
            action="deployment.create",
            obj=deployment,
            organization=organization,
            changes={**values, **({"api_key": api_key} if api_key else {})},
        )
        _changed_on_commit(f"deployment:{deployment.pk}")
    return deployment


def deployment_update(
    *, actor: Actor, deployment: ModelDeployment, api_key: str | None = None, api_key_ref: str = "", **values
) -> ModelDeployment:
    """``api_key`` None keeps the stored credential; "" clears it; anything else replaces it.

    A replaced key takes ``api_key_ref`` as its origin: a key typed into the admin has none, so an export
    no longer claims it comes from the variable an earlier config file named.
    """
    _authorize(actor, deployment.organization)
    _validate(values)
    with transaction.atomic():
        for name, value in values.items():
            setattr(deployment, name, value)
        if api_key is not None:
            deployment.set_credentials(api_key)
            deployment.credentials_ref = api_key_ref if api_key else ""
        deployment.full_clean()
        deployment.save()
        changes = dict(values)
        if api_key is not None:
            changes["api_key"] = api_key
        audit_record(
            actor=actor,
            action="deployment.update",
            obj=deployment,
            organization=deployment.organization,
            changes=changes,
        )
        _changed_on_commit(f"deployment:{deployment.pk}")
    return deployment


def deployment_delete(*, actor: Actor, deployment: ModelDeployment) -> None:
    _authorize(actor, deployment.organization)
    with transaction.atomic():
        audit_record(actor=actor, action="deployment.delete", obj=deployment, organization=deployment.organization)
        deployment.delete()
        _changed_on_commit("deployment:deleted")


def routing_save(*, actor: Actor, obj: ModelGroup | ModelAlias) -> ModelGroup | ModelAlias:
    """Model groups and aliases are shared by every tenant: superusers only."""
    if not tenancy_for(actor.user).is_superuser:
        raise PermissionDenied("Only a superuser may change model routing.")
    with transaction.atomic():
        created = obj.pk is None
        obj.full_clean()
        obj.save()
        kind = obj._meta.model_name
        audit_record(actor=actor, action=f"{kind}.{'create' if created else 'update'}", obj=obj)
        _changed_on_commit(f"{kind}:{obj.pk}")
    return obj


def routing_delete(*, actor: Actor, obj: ModelGroup | ModelAlias) -> None:
    if not tenancy_for(actor.user).is_superuser:
        raise PermissionDenied("Only a superuser may change model routing.")
    with transaction.atomic():
        audit_record(actor=actor, action=f"{obj._meta.model_name}.delete", obj=obj)
        obj.delete()
        _changed_on_commit(f"{obj._meta.model_name}:deleted")
