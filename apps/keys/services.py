"""Writes for virtual keys and API tokens. Each returns the object; secrets are returned once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.common.invalidation import publish_invalidation
from apps.keys.hashing import TOKEN_PREFIX, display_prefix, generate_secret, keyed_hash
from apps.keys.models import ApiToken, VirtualKey
from apps.teams.access import access_groups_for, outside
from apps.teams.audit import SYSTEM, Actor, audit_record
from apps.teams.limits import LIMIT_FIELDS, SESSION_CAPS, check_within, model_limits_problem
from apps.teams.models import Team
from apps.teams.scoping import ACTIONS, CHANGE, require, tenancy_for

KEY_SETTABLE = (
    *LIMIT_FIELDS,
    "budget_duration",
    "alias",
    "allowed_models",
    "model_limits",
    "metadata",
    "priority",
    "session_max_budget",
    "session_max_iterations",
    "budget_clamp_max_tokens",
    "cache_ttl_seconds",
    "expires_at",
)


@dataclass(frozen=True)
class IssuedKey:
    key: VirtualKey
    secret: str


def _invalidate_on_commit(reason: str) -> None:
    transaction.on_commit(lambda: publish_invalidation(reason))


def _validate_shapes(values: dict) -> None:
    """JSON fields the hot path reads as-is: reject a wrong shape here, never at request time."""
    errors = {}
    if "model_limits" in values:
        problem = model_limits_problem(values["model_limits"])
        if problem:
            errors["model_limits"] = problem
    if "metadata" in values and not isinstance(values["metadata"], dict):
        errors["metadata"] = "must be an object."
    if "allowed_models" in values and not (
        isinstance(values["allowed_models"], list) and all(isinstance(m, str) for m in values["allowed_models"])
    ):
        errors["models"] = "must be a list of model names."
    if errors:
        raise ValidationError(errors)


DEFAULT_PRIORITY = VirtualKey._meta.get_field("priority").default
ALIAS_MAX_LENGTH = VirtualKey._meta.get_field("alias").max_length


def alias_taken(*, team: Team, alias: str, exclude_pk: int | None = None) -> bool:
    """Whether another key of ``team`` (revoked ones included) already answers to ``alias``; empty is never taken."""
    if not alias:
        return False
    return VirtualKey.objects.filter(team=team, alias=alias).exclude(pk=exclude_pk).exists()


def alias_free(*, team: Team, alias: str) -> str:
    """``alias``, or the first of ``alias-2``, ``alias-3``... no key of ``team`` uses (imports keep every key)."""
    candidate, n = alias, 1
    while alias_taken(team=team, alias=candidate):
        n += 1
        suffix = f"-{n}"
        candidate = alias[: ALIAS_MAX_LENGTH - len(suffix)] + suffix
    return candidate


def _refuse_taken_alias(*, team: Team, values: dict, exclude_pk: int | None = None) -> None:
    # A clear field error before the database constraint would answer with an IntegrityError (a 500).
    if alias_taken(team=team, alias=values.get("alias") or "", exclude_pk=exclude_pk):
        raise ValidationError({"alias": "another key in this team already has this alias."})


def _validate_key_values(*, team: Team, user, values: dict) -> None:
    groups = access_groups_for(team.organization_id)

    def models_outside(child: list[str], parent: list[str]) -> list[str]:
        return outside(child, parent, groups)

    errors = check_within(values, team, parent_label="team", models_outside=models_outside)
    errors.update(check_within(values, team.organization, parent_label="organization", models_outside=models_outside))
    if user is not None and getattr(user, "pk", None):
        errors.update(check_within(values, user, parent_label="user"))
    for name in SESSION_CAPS:
        ceiling, value = getattr(team, name), values.get(name)
        if ceiling is not None and value is not None and value > ceiling:
            errors[name] = f"cannot exceed the team's {name} ({ceiling})."
    if errors:
        raise ValidationError(errors)


def _authorize_key_write(*, actor: Actor, key: VirtualKey) -> None:
    """Admins of the team or its organization may manage any key in it; members only their own."""
    require(actor.user, CHANGE, key, message=ACTIONS["key.create"].refusal)


def _authorize_key_loosening(*, actor: Actor, key: VirtualKey | None, values: dict) -> None:
    """What only admins may do, even to a member's own key.

    Priority shares model capacity across every tenant, so only superusers set it. An owner may
    tighten their key (block it, expire it sooner) but not undo what an admin imposed.
    """
    current_priority = key.priority if key is not None else DEFAULT_PRIORITY
    if "priority" in values and values["priority"] != current_priority:
        require(actor.user, "key.set_priority")
    if key is None:
        return
    if values.get("blocked") is False and key.blocked:
        require(actor.user, "key.loosen", key, message="Only an admin of the team may unblock this key.")
    if "expires_at" in values and key.expires_at is not None:
        new = values["expires_at"]
        if new is None or new > key.expires_at:
            require(actor.user, "key.loosen", key, message="Only an admin of the team may extend this key's expiry.")


def _refuse_while_blocked(*, actor: Actor, key: VirtualKey) -> None:
    """A block on a member's key also stops that member minting a fresh key in the team, until an admin
    lifts it (unblocks or revokes the blocked key). Otherwise a block is undone by creating a new key.

    Only self-service is stopped: an admin of the team creating a key for the member is the explicit
    decision a block waits for. Any block counts, also one the member set on their own key (only an
    admin may lift that one too); a member retiring a key revokes it instead.
    """
    if key.user_id is None:
        return
    if VirtualKey.objects.filter(team=key.team, user=key.user, blocked=True, revoked_at__isnull=True).exists():
        require(actor.user, "key.create_while_blocked", key)


def _secret_taken(secret: str) -> bool:
    """A chosen secret some key already answers to (also an imported LiteLLM key not used yet)."""
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return VirtualKey.objects.filter(Q(key_hash=keyed_hash(secret)) | Q(legacy_sha256=digest)).exists()


def key_create(*, actor: Actor, team: Team, user=None, secret: str | None = None, **values) -> IssuedKey:
    """Create a key within what the team, organization and owner allow.

    ``secret``: a key chosen by the caller (the demo, LiteLLM's ``/key/generate`` with ``key``; its shape is the
    caller's to check, ``custom_secret_problem``); refused when another key already answers to it.
    """
    unknown = set(values) - set(KEY_SETTABLE)
    if unknown:
        raise ValidationError({name: "this field cannot be set." for name in sorted(unknown)})
    tenancy = tenancy_for(actor.user)
    if user is None and not tenancy.is_tenant_admin and tenancy.user_id is not None:
        user = actor.user  # a member's key is always their own
    if user is not None and not user.memberships.filter(team=team).exists() and not user.is_superuser:
        raise ValidationError({"user": "the user is not a member of this team."})
    # Asked about the key as it would be: the same rule as changing it once it exists.
    prospective = VirtualKey(team=team, organization_id=team.organization_id, user=user)
    require(actor.user, "key.create", prospective)
    _refuse_while_blocked(actor=actor, key=prospective)
    _authorize_key_loosening(actor=actor, key=None, values=values)
    _validate_shapes(values)
    _validate_key_values(team=team, user=user, values=values)
    _refuse_taken_alias(team=team, values=values)
    if secret is not None and _secret_taken(secret):
        raise ValidationError({"key": "already in use: choose another."})
    secret = secret or generate_secret()
    with transaction.atomic():
        key = VirtualKey(
            key_hash=keyed_hash(secret),
            prefix=display_prefix(secret),
            team=team,
            organization_id=team.organization_id,
            user=user,
            created_by=actor.user_row,
            **values,
        )
        key.full_clean()
        key.save()
        audit_record(
            actor=actor, action="key.create", obj=key, organization=team.organization, team=team, changes=values
        )
    return IssuedKey(key=key, secret=secret)


def key_update(*, actor: Actor, key: VirtualKey, **values) -> VirtualKey:
    unknown = set(values) - set(KEY_SETTABLE) - {"blocked"}
    if unknown:
        raise ValidationError({name: "this field cannot be changed." for name in sorted(unknown)})
    _authorize_key_write(actor=actor, key=key)
    _authorize_key_loosening(actor=actor, key=key, values=values)
    _validate_shapes(values)
    merged = {name: values.get(name, getattr(key, name)) for name in (*LIMIT_FIELDS, *SESSION_CAPS, "allowed_models")}
    _validate_key_values(team=key.team, user=key.user, values=merged)
    if "alias" in values:
        _refuse_taken_alias(team=key.team, values=values, exclude_pk=key.pk)
    with transaction.atomic():
        for name, value in values.items():
            setattr(key, name, value)
        key.full_clean()
        key.save()
        audit_record(
            actor=actor, action="key.update", obj=key, organization=key.organization, team=key.team, changes=values
        )
        _invalidate_on_commit(f"key:{key.pk}")
    return key


def key_set_blocked(*, actor: Actor, key: VirtualKey, blocked: bool) -> VirtualKey:
    _authorize_key_write(actor=actor, key=key)
    _authorize_key_loosening(actor=actor, key=key, values={"blocked": blocked})
    with transaction.atomic():
        key.blocked = blocked
        key.save(update_fields=["blocked", "updated_at"])
        audit_record(
            actor=actor,
            action="key.block" if blocked else "key.unblock",
            obj=key,
            organization=key.organization,
            team=key.team,
        )
        _invalidate_on_commit(f"key:{key.pk}")
    return key


def keys_suspend_for_departure(*, actor: Actor, user, organization, team: Team | None = None, reason: str) -> int:
    """Block ``user``'s live keys in ``team`` (or in every team of ``organization``) because they left it.

    A key outlives its owner's membership otherwise: it keeps working for someone no longer in the team.
    Blocking (not revoking) lets an admin bring a key back with an explicit unblock, for instance a
    service key that must keep running; re-adding the person does not. The caller has already decided
    the actor may remove the person; each key still needs an admin of its team. Returns how many.
    """
    keys = VirtualKey.objects.select_for_update(of=("self",)).filter(
        user=user, organization=organization, blocked=False, revoked_at__isnull=True
    )
    if team is not None:
        keys = keys.filter(team=team)
    suspended = 0
    with transaction.atomic():
        for key in keys.select_related("team", "organization"):
            require(actor.user, "key.suspend", key)
            key.blocked = True
            key.save(update_fields=["blocked", "updated_at"])
            audit_record(
                actor=actor,
                action="key.block",
                obj=key,
                organization=key.organization,
                team=key.team,
                changes={"reason": reason},
            )
            suspended += 1
        if suspended:
            _invalidate_on_commit(f"user:{user.pk}")
    return suspended


def key_revoke(*, actor: Actor, key: VirtualKey) -> VirtualKey:
    _authorize_key_write(actor=actor, key=key)
    with transaction.atomic():
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at", "updated_at"])
            audit_record(actor=actor, action="key.revoke", obj=key, organization=key.organization, team=key.team)
        _invalidate_on_commit(f"key:{key.pk}")
    return key


def key_rotate(*, actor: Actor, key: VirtualKey) -> IssuedKey:
    """Issue a new secret for the same key (same id, limits and spend history); the old secret stops working."""
    if key.revoked_at is not None:
        raise ValidationError({"key": "a revoked key cannot be rotated."})
    _authorize_key_write(actor=actor, key=key)
    secret = generate_secret()
    with transaction.atomic():
        key.key_hash = keyed_hash(secret)
        key.prefix = display_prefix(secret)
        key.save(update_fields=["key_hash", "prefix", "updated_at"])
        audit_record(actor=actor, action="key.rotate", obj=key, organization=key.organization, team=key.team)
        _invalidate_on_commit(f"key:{key.pk}")
    return IssuedKey(key=key, secret=secret)


def api_token_create(*, actor: Actor, user, name: str, expires_at=None) -> tuple[ApiToken, str]:
    if not actor.user_row and not tenancy_for(actor.user).is_superuser:
        raise PermissionDenied("Only a user or the master key can create API tokens.")
    require(actor.user, "api_token.create", user)
    secret = generate_secret(TOKEN_PREFIX)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user, name=name, token_hash=keyed_hash(secret), prefix=display_prefix(secret), expires_at=expires_at
        )
        audit_record(actor=actor, action="api_token.create", obj=token)
    return token, secret


def api_token_delete(*, actor: Actor, token: ApiToken) -> None:
    """Tokens are revoked by deleting them; only their owner or a superuser may."""
    require(actor.user, "api_token.delete", token)
    with transaction.atomic():
        audit_record(actor=actor, action="api_token.delete", obj=token)
        token.delete()


# The stored key_hash of an imported key: the keyed hash of a string no presented secret can be, so it never
# matches until the first use upgrades it (the column is unique and required).
LEGACY_PLACEHOLDER = "litellm-legacy:"


def key_import_ref(digest: str) -> str:
    """The import's handle on a LiteLLM key (its token id, the SHA-256 digest): the same for every run."""
    return keyed_hash(LEGACY_PLACEHOLDER + digest)


def key_import_legacy(*, actor: Actor, team: Team, user=None, digest: str, display: str = "", **values) -> VirtualKey:
    """A key moved from LiteLLM, which stores only ``sha256(secret).hexdigest()``: the same secret keeps working.

    The key is checked like any new key (team, owner, limits within the team's); ``display`` is LiteLLM's
    ``key_name`` (``sk-...abcd``), shown instead of the secret.
    """
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise ValidationError({"token": "not a SHA-256 hex digest."})
    unknown = set(values) - set(KEY_SETTABLE)
    if unknown:
        raise ValidationError({name: "this field cannot be set." for name in sorted(unknown)})
    if user is not None and not user.memberships.filter(team=team).exists() and not user.is_superuser:
        raise ValidationError({"user": "the user is not a member of this team."})
    prospective = VirtualKey(team=team, organization_id=team.organization_id, user=user)
    require(actor.user, "key.create", prospective)  # the same rule as key_create
    _authorize_key_loosening(actor=actor, key=None, values=values)
    _validate_shapes(values)
    _validate_key_values(team=team, user=user, values=values)
    _refuse_taken_alias(team=team, values=values)
    with transaction.atomic():
        key = VirtualKey(
            key_hash=keyed_hash(LEGACY_PLACEHOLDER + digest),
            legacy_sha256=digest,
            import_ref=key_import_ref(digest),
            prefix=(display or "sk-...(LiteLLM)")[:32],
            team=team,
            organization_id=team.organization_id,
            user=user,
            created_by=actor.user_row,
            **values,
        )
        key.full_clean()
        key.save()
        audit_record(
            actor=actor, action="key.import", obj=key, organization=team.organization, team=team, changes=values
        )
    return key


def key_legacy_upgrade(*, secret: str) -> bool:
    """Move an imported key to the keyed hash when its secret is first presented; False when none matches.

    Runs on an auth cache miss for a secret that is not one of ours (not ``sk-gw-``): one indexed lookup.
    """
    digest = hashlib.sha256(secret.encode()).hexdigest()
    with transaction.atomic():
        key = VirtualKey.objects.select_for_update().filter(legacy_sha256=digest).first()
        if key is None:
            return False
        key.key_hash = keyed_hash(secret)
        key.legacy_sha256 = None
        key.save(update_fields=["key_hash", "legacy_sha256", "updated_at"])
        audit_record(actor=SYSTEM, action="key.upgrade_hash", obj=key, organization=key.organization, team=key.team)
    return True
