"""Writes for model deployments (admin and REST API). Credentials go in here and never come back out.

Kept separate from the hot path: the /v1 app only reads deployments through its cached registry,
which every write here invalidates after commit.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.common.invalidation import publish_invalidation
from apps.proxy.models import ModelAlias, ModelDeployment, ModelGroup
from apps.proxy.upstreams import HEADER_SAFE_FIELDS, api_base_problem, control_character_problem
from apps.teams.audit import Actor, audit_record
from apps.teams.models import Organization
from apps.teams.scoping import CHANGE, DELETE, require

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


# Shared deployments (no organization) belong to superusers; an org's own ones to its admins.
DEPLOYMENT_REFUSAL = "You may not manage these deployments."
ROUTING_REFUSAL = "Only a superuser may change model routing."


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
    require(actor.user, "deployment.create", ModelDeployment(organization=organization))
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
    require(actor.user, CHANGE, deployment, message=DEPLOYMENT_REFUSAL)
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
    require(actor.user, DELETE, deployment, message=DEPLOYMENT_REFUSAL)
    with transaction.atomic():
        audit_record(actor=actor, action="deployment.delete", obj=deployment, organization=deployment.organization)
        deployment.delete()
        _changed_on_commit("deployment:deleted")


def routing_save(*, actor: Actor, obj: ModelGroup | ModelAlias) -> ModelGroup | ModelAlias:
    """Model groups and aliases are shared by every tenant: superusers only."""
    require(actor.user, CHANGE, obj, message=ROUTING_REFUSAL)
    with transaction.atomic():
        created = obj.pk is None
        obj.full_clean()
        obj.save()
        kind = obj._meta.model_name
        audit_record(actor=actor, action=f"{kind}.{'create' if created else 'update'}", obj=obj)
        _changed_on_commit(f"{kind}:{obj.pk}")
    return obj


def routing_delete(*, actor: Actor, obj: ModelGroup | ModelAlias) -> None:
    require(actor.user, DELETE, obj, message=ROUTING_REFUSAL)
    with transaction.atomic():
        audit_record(actor=actor, action=f"{obj._meta.model_name}.delete", obj=obj)
        obj.delete()
        _changed_on_commit(f"{obj._meta.model_name}:deleted")
