"""Writes for single sign-on: mapping rules (audited, tenant-scoped) and signing a person in from claims."""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.sso.claims import Claims, email_domain_allowed
from apps.sso.models import GroupMapping, MatchKind, SsoIdentity
from apps.sso.operator import sso_actor
from apps.sso.sync import SyncResult, memberships_sync
from apps.teams.audit import Actor, audit_record
from apps.teams.models import Membership, Organization, Role, Team, User
from apps.teams.scoping import require
from apps.teams.services import user_create

MAPPING_ACTION = "sso_mapping.change"


class SsoRefused(Exception):
    """The provider vouched for someone the gateway does not let in; the message is shown to them."""


def _mapping_check(mapping: GroupMapping) -> None:
    if mapping.team_id and mapping.team.organization_id != mapping.organization_id:
        raise ValidationError({"team": "the team belongs to another organization."})
    if not mapping.value.strip():
        raise ValidationError({"value": "name the group (or client id) exactly as the provider sends it."})
    mapping.full_clean()


def group_mapping_create(
    *,
    actor: Actor,
    kind: str = MatchKind.GROUP,
    value: str,
    organization: Organization,
    team: Team | None = None,
    role: str = Role.MEMBER,
) -> GroupMapping:
    mapping = GroupMapping(kind=kind, value=value.strip(), organization=organization, team=team, role=role)
    require(actor.user, MAPPING_ACTION, mapping, message="Only the organization's owners may add sign-on rules.")
    _mapping_check(mapping)
    with transaction.atomic():
        mapping.save()
        audit_record(
            actor=actor,
            action="sso_mapping.create",
            obj=mapping,
            organization=organization,
            team=team,
            changes={"kind": kind, "value": mapping.value, "role": role},
        )
    return mapping


def group_mapping_update(*, actor: Actor, mapping: GroupMapping, **values) -> GroupMapping:
    """Change a rule; asked about it as stored and as it would become (no moving a rule out of one's reach)."""
    require(actor.user, MAPPING_ACTION, mapping, message="Only the organization's owners may change sign-on rules.")
    unknown = set(values) - {"kind", "value", "organization", "team", "role"}
    if unknown:
        raise ValidationError({name: "this field cannot be set." for name in sorted(unknown)})
    old = {name: str(getattr(mapping, name)) for name in values}
    for name, value in values.items():
        setattr(mapping, name, value.strip() if name == "value" else value)
    require(actor.user, MAPPING_ACTION, mapping, message="Only the organization's owners may change sign-on rules.")
    _mapping_check(mapping)
    with transaction.atomic():
        mapping.save()
        audit_record(
            actor=actor,
            action="sso_mapping.update",
            obj=mapping,
            organization=mapping.organization,
            team=mapping.team,
            changes={name: [old[name], str(getattr(mapping, name))] for name in values},
        )
    return mapping


def group_mapping_delete(*, actor: Actor, mapping: GroupMapping) -> None:
    """Removing a rule takes effect at each person's next login (or the periodic sync), not at once."""
    require(actor.user, MAPPING_ACTION, mapping, message="Only the organization's owners may remove sign-on rules.")
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="sso_mapping.delete",
            obj=mapping,
            organization=mapping.organization,
            team=mapping.team,
        )
        mapping.delete()


def _username_for(claims: Claims) -> str:
    base = claims.email or (f"sso-{claims.client_id}" if claims.client_id else f"sso-{claims.subject}")
    return base[:150]


def _identity_for(*, claims: Claims, actor: Actor) -> SsoIdentity:
    """The person behind ``(iss, sub)``; created on their first sign-in (just in time), audited.

    An existing account is adopted only by a verified e-mail equal to its own, and never a superuser's:
    the break-glass accounts stay password-only, and nobody becomes an existing person by choosing a name.
    """
    # Locked: two sign-ins (or API calls) of one subject at once sync its memberships one after the other.
    identity = (
        SsoIdentity.objects.select_for_update(of=("self",))
        .select_related("user")
        .filter(issuer=claims.issuer, subject=claims.subject)
        .first()
    )
    if identity is not None:
        return identity
    username = _username_for(claims)
    user = User.objects.filter(username=username).first()
    if user is not None:
        adoptable = (
            claims.email_verified
            and user.email.lower() == claims.email
            and claims.email
            and not user.is_superuser
            and not SsoIdentity.objects.filter(user=user).exists()
        )
        if not adoptable:
            raise SsoRefused("An account with this name already exists here; ask an administrator to link it.")
    else:
        user = user_create(
            actor=actor,
            username=username,
            email=claims.email,
            first_name=claims.given_name,
            last_name=claims.family_name,
        )
    identity = SsoIdentity.objects.create(
        user=user, issuer=claims.issuer, subject=claims.subject, client_id=claims.client_id
    )
    audit_record(actor=actor, action="sso.identity_link", obj=identity, changes={"user": user.username})
    return identity


def _groups_record(*, identity: SsoIdentity, claims: Claims, actor: Actor, login: bool) -> None:
    """Remember the groups (and, for API tokens, the client) the rules were last applied to; audit a change.

    A browser sign-in's ``azp`` is the gateway's own client, not a service account: it is not kept, so
    "client" rules only ever match API tokens, also in the periodic sync."""
    now = timezone.now()
    groups = sorted(claims.groups)
    if groups != identity.groups:
        audit_record(
            actor=actor,
            action="sso.groups_change",
            obj=identity.user,
            changes={"groups": [identity.groups, groups]},
        )
    identity.groups = groups
    identity.client_id = "" if login else claims.client_id
    identity.synced_at = now
    fields = ["groups", "client_id", "synced_at"]
    if login:
        identity.last_login_at = now
        fields.append("last_login_at")
    identity.save(update_fields=fields)


def _apply(*, claims: Claims, actor: Actor, login: bool) -> SsoIdentity:
    """Find or create the identity, record its groups and sync its memberships, in one transaction.

    A first sign-in racing another of the same subject (parallel CI jobs with a fresh token) loses on a
    unique constraint; it is rolled back and run once more, when it finds what the winner created.
    """
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                identity = _identity_for(claims=claims, actor=actor)
                _groups_record(identity=identity, claims=claims, actor=actor, login=login)
                client_id = "" if login else claims.client_id
                memberships_sync(actor=actor, identity=identity, groups=claims.groups, client_id=client_id)
                return identity
        except IntegrityError:
            if attempt == 2:
                raise SsoRefused("Another sign-in of yours was being set up at the same time; try again.") from None
    raise AssertionError("unreachable")


def sso_sign_in(*, claims: Claims, allowed_domains: list[str], ip_address: str | None = None) -> User:
    """The user a verified ID token signs in, with memberships made to match its groups; or ``SsoRefused``.

    The sync commits before the access decision: someone whose last group was removed loses their
    memberships (and their keys stop) even though this very login is then refused.
    """
    if not claims.subject:
        raise SsoRefused("The identity provider sent no subject.")
    if not email_domain_allowed(claims.email, allowed_domains):
        raise SsoRefused("Your e-mail domain may not sign in here.")
    if allowed_domains and not claims.email_verified:
        raise SsoRefused("Your e-mail address is not verified by the identity provider.")
    identity = _apply(claims=claims, actor=sso_actor(ip_address), login=True)
    user = identity.user
    if not user.is_active:
        raise SsoRefused("Your account is deactivated here.")
    if not user.is_superuser and not Membership.objects.filter(user=user).exists():
        raise SsoRefused("None of your groups gives access to the gateway.")
    return user


def sso_token_user(*, claims: Claims, resync_after: timedelta) -> User | None:
    """The user a verified API access token acts as (a service account or a person), or None for no access.

    Memberships are re-synced when the token's groups or client differ from the last sync, or after
    ``resync_after``: an access token arrives on every API call, and the rules must not be re-read each time.
    """
    actor = sso_actor()
    identity = SsoIdentity.objects.select_related("user").filter(issuer=claims.issuer, subject=claims.subject).first()
    fresh = (
        identity is not None
        and identity.synced_at is not None
        and identity.groups == sorted(claims.groups)
        and identity.client_id == claims.client_id
        and timezone.now() - identity.synced_at < resync_after
    )
    if not fresh:
        identity = _apply(claims=claims, actor=actor, login=False)
    user = identity.user
    if not user.is_active or not (user.is_superuser or Membership.objects.filter(user=user).exists()):
        return None
    return user


def sso_resync_all(*, actor: Actor | None = None) -> SyncResult:
    """Re-apply the current rules to every identity's last known groups (the periodic sync).

    A rule an owner removed or changed reaches people who have not signed in since; groups themselves
    are only learnt at sign-in (or from an API token), as the provider is not asked in between.
    """
    actor = actor or sso_actor()
    total = SyncResult()
    for identity in SsoIdentity.objects.select_related("user").iterator():
        result = memberships_sync(
            actor=actor, identity=identity, groups=tuple(identity.groups), client_id=identity.client_id
        )
        total = SyncResult(
            created=total.created + result.created,
            updated=total.updated + result.updated,
            removed=total.removed + result.removed,
        )
    return total
