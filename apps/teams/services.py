"""Writes for organizations, teams, members and customers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.common.invalidation import publish_invalidation
from apps.teams.access import access_groups_for, outside
from apps.teams.audit import Actor, audit_record
from apps.teams.departures import Departure, departure_consequences
from apps.teams.limits import LIMIT_FIELDS, SESSION_CAPS, check_within, model_limits_problem
from apps.teams.models import Customer, Membership, Organization, Role, Team, User
from apps.teams.scoping import CHANGE, DELETE, require, tenancy_for

ORG_SETTABLE = (*LIMIT_FIELDS, "budget_duration", "name", "time_zone", "allowed_models", "blocked")
TEAM_SETTABLE = (
    *LIMIT_FIELDS,
    "budget_duration",
    "name",
    "allowed_models",
    "model_limits",
    "session_max_budget",
    "session_max_iterations",
    "budget_clamp_max_tokens",
    "trace_content",
    "cache_ttl_seconds",
    "blocked",
)
USER_SETTABLE = (*LIMIT_FIELDS, "budget_duration", "email", "first_name", "last_name", "is_active")


def _reject_unknown(values: dict, allowed: tuple[str, ...]) -> None:
    unknown = set(values) - set(allowed)
    if unknown:
        raise ValidationError({name: "this field cannot be set." for name in sorted(unknown)})


def _changed_on_commit(reason: str) -> None:
    transaction.on_commit(lambda: publish_invalidation(reason))


def _require_membership_change(actor: Actor, membership: Membership) -> None:
    """Admins of the membership's team (or, for an organization-wide role, of the organization) may."""
    where = "team" if membership.team_id else "organization"
    require(actor.user, "membership.change", membership, message=f"You are not an admin of this {where}.")


def _validate_time_zone(values: dict) -> None:
    """Budget windows are computed in this zone on the hot path: an unknown name must never be stored."""
    if "time_zone" not in values:
        return
    try:
        ZoneInfo(str(values["time_zone"]))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError({"time_zone": "not a known IANA time zone (e.g. Europe/Berlin)."}) from None


def organization_create(*, actor: Actor, name: str, **values) -> Organization:
    require(actor.user, "organization.create")
    _reject_unknown(values, ORG_SETTABLE)
    _validate_time_zone(values)
    with transaction.atomic():
        org = Organization(name=name, **values)
        org.full_clean()
        org.save()
        audit_record(actor=actor, action="organization.create", obj=org, organization=org, changes=values)
    return org


def organization_update(*, actor: Actor, organization: Organization, **values) -> Organization:
    require(actor.user, CHANGE, organization, message="You are not an admin of this organization.")
    _reject_unknown(values, ORG_SETTABLE)
    _validate_time_zone(values)
    if set(values) & {*LIMIT_FIELDS, "budget_duration", "allowed_models", "blocked"}:
        require(actor.user, "organization.set_ceiling", organization)
    with transaction.atomic():
        for name, value in values.items():
            setattr(organization, name, value)
        organization.full_clean()
        organization.save()
        audit_record(
            actor=actor, action="organization.update", obj=organization, organization=organization, changes=values
        )
        _changed_on_commit(f"organization:{organization.pk}")
    return organization


def _outside(organization_id: int) -> Callable[[list[str], list[str]], list[str]]:
    """Checks a model list against its parent's with the organization's access groups expanded."""
    groups = access_groups_for(organization_id)
    return lambda child, parent: outside(child, parent, groups)


def _validate_team_shapes(values: dict) -> None:
    if "model_limits" in values:
        problem = model_limits_problem(values["model_limits"])
        if problem:
            raise ValidationError({"model_limits": problem})


def team_create(*, actor: Actor, organization: Organization, name: str, **values) -> Team:
    require(actor.user, "team.create", organization)
    _reject_unknown(values, TEAM_SETTABLE)
    _validate_team_shapes(values)
    errors = check_within(values, organization, parent_label="organization", models_outside=_outside(organization.pk))
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        team = Team(organization=organization, name=name, **values)
        team.full_clean()
        team.save()
        audit_record(actor=actor, action="team.create", obj=team, organization=organization, team=team, changes=values)
    return team


def team_update(*, actor: Actor, team: Team, **values) -> Team:
    _reject_unknown(values, TEAM_SETTABLE)
    ceiling_fields = {*LIMIT_FIELDS, *SESSION_CAPS, "budget_duration", "allowed_models", "model_limits", "blocked"}
    if set(values) & ceiling_fields:
        require(actor.user, "team.set_ceiling", team)
    else:
        require(actor.user, CHANGE, team, message="You are not an admin of this team.")
    _validate_team_shapes(values)
    merged = {name: values.get(name, getattr(team, name)) for name in (*LIMIT_FIELDS, "allowed_models")}
    errors = check_within(
        merged, team.organization, parent_label="organization", models_outside=_outside(team.organization_id)
    )
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        for name, value in values.items():
            setattr(team, name, value)
        team.full_clean()
        team.save()
        audit_record(
            actor=actor, action="team.update", obj=team, organization=team.organization, team=team, changes=values
        )
        _changed_on_commit(f"team:{team.pk}")
    return team


def user_create(*, actor: Actor, username: str, password: str | None = None, **values) -> User:
    require(actor.user, "user.create")
    _reject_unknown(values, USER_SETTABLE)
    if set(values) & set(LIMIT_FIELDS):
        require(actor.user, "user.set_limits")
    with transaction.atomic():
        user = User(username=username, is_staff=True, **values)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.full_clean(exclude=["password"])
        user.save()
        audit_record(actor=actor, action="user.create", obj=user, changes=values)
    return user


def user_create_with_membership(
    *,
    actor: Actor,
    username: str,
    password: str | None = None,
    team: Team | None = None,
    organization: Organization | None = None,
    role: str = Role.MEMBER,
    **values,
) -> User:
    """A new person and the membership that places them, all or nothing (REST API and admin alike).

    A refused membership (a role the creator may not grant, a team they don't run) rolls the account
    back: otherwise a staff account with a known password would survive the error, belonging to no
    tenant. A tenant admin must name where the person joins, or they would vanish from their own view.
    """
    if team is None and organization is None and not tenancy_for(actor.user).is_superuser:
        raise ValidationError({"team": "name the team (or organization) the new user joins."})
    with transaction.atomic():
        user = user_create(actor=actor, username=username, password=password, **values)
        if team is not None or organization is not None:
            membership_create(
                actor=actor, user=user, organization=team.organization if team else organization, team=team, role=role
            )
    return user


def membership_create(
    *, actor: Actor, user: User, organization: Organization, team: Team | None = None, role: str = Role.MEMBER
) -> Membership:
    if team is not None:
        if team.organization_id != organization.pk:
            raise ValidationError({"team": "the team belongs to another organization."})
        require(actor.user, "membership.create", team)
    else:
        require(actor.user, "membership.create", organization, message="You are not an admin of this organization.")
    if role == Role.OWNER:
        require(actor.user, "membership.owner", organization, message="Only organization admins may appoint owners.")
    with transaction.atomic():
        membership = Membership(user=user, organization=organization, team=team, role=role)
        membership.full_clean()
        membership.save()
        if not user.is_staff:
            user.is_staff = True  # lets them log in to the (tenant-scoped) admin
            user.save(update_fields=["is_staff"])
        audit_record(
            actor=actor,
            action="membership.create",
            obj=membership,
            organization=organization,
            team=team,
            changes={"user": user.username, "role": role},
        )
    return membership


def membership_delete(*, actor: Actor, membership: Membership) -> None:
    _require_membership_change(actor, membership)
    if membership.role == Role.OWNER:
        require(
            actor.user,
            "membership.owner",
            membership.organization,
            message="Only organization admins may remove owners.",
        )
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="membership.delete",
            obj=membership,
            organization=membership.organization,
            team=membership.team,
        )
        membership.delete()
        if membership.team_id:
            # Keys belong to a person *in a team*: out of the team, their keys there stop too (the keys app's hook).
            departure_consequences(
                Departure(
                    actor=actor,
                    user=membership.user,
                    organization=membership.organization,
                    team=membership.team,
                    reason="owner removed from the team",
                )
            )


@dataclass(frozen=True)
class Offboarding:
    user: User
    organization: Organization
    memberships_removed: int
    keys_suspended: int


def user_offboard(*, actor: Actor, user: User, organization: Organization) -> Offboarding:
    """Remove a person from the organization: every team membership and org-wide role, and block their keys.

    An organization admin's decision (a team admin removes people from their own team with
    ``membership_delete``). Every live key the person owns in the organization is blocked, including
    keys left over from memberships removed earlier. The person's account stays: they may belong to
    other organizations.
    """
    require(actor.user, "user.offboard", organization)
    if tenancy_for(actor.user).user_id == user.pk:
        raise ValidationError({"user": "you cannot offboard yourself; ask another admin of the organization."})
    with transaction.atomic():
        memberships = list(
            Membership.objects.select_for_update(of=("self",))
            .filter(user=user, organization=organization)
            .select_related("team")
        )
        for membership in memberships:
            audit_record(
                actor=actor,
                action="membership.delete",
                obj=membership,
                organization=organization,
                team=membership.team,
            )
            membership.delete()
        reason = "owner offboarded from the organization"
        departure = Departure(actor=actor, user=user, organization=organization, team=None, reason=reason)
        suspended = departure_consequences(departure).get("keys_suspended", 0)
        audit_record(
            actor=actor,
            action="user.offboard",
            obj=user,
            organization=organization,
            changes={"memberships_removed": len(memberships), "keys_suspended": suspended},
        )
    return Offboarding(
        user=user, organization=organization, memberships_removed=len(memberships), keys_suspended=suspended
    )


def customer_upsert(*, actor: Actor, organization: Organization, external_id: str, **values) -> Customer:
    require(actor.user, "customer.upsert", organization)
    _reject_unknown(values, (*LIMIT_FIELDS, "budget_duration", "blocked"))
    with transaction.atomic():
        customer, _ = Customer.objects.get_or_create(organization=organization, external_id=external_id)
        for name, value in values.items():
            setattr(customer, name, value)
        customer.full_clean()
        customer.save()
        audit_record(actor=actor, action="customer.upsert", obj=customer, organization=organization, changes=values)
        _changed_on_commit(f"customer:{customer.pk}")
    return customer


def user_update(*, actor: Actor, user: User, **values) -> User:
    """Superusers change anyone; a person changes their own name and email. Tenant admins don't edit people:
    one person can belong to several tenants, and a change made by one tenant would reach the others."""
    _reject_unknown(values, USER_SETTABLE)
    require(actor.user, "user.update", user)
    if set(values) - {"email", "first_name", "last_name"}:
        require(actor.user, "user.set_limits", message="Only a superuser may change limits or deactivate a user.")
    with transaction.atomic():
        for name, value in values.items():
            setattr(user, name, value)
        user.full_clean(exclude=["password"])
        user.save()
        audit_record(actor=actor, action="user.update", obj=user, changes=values)
        _changed_on_commit(f"user:{user.pk}")
    return user


def membership_update(*, actor: Actor, membership: Membership, role: str) -> Membership:
    _require_membership_change(actor, membership)
    if Role.OWNER in (role, membership.role):
        require(actor.user, "membership.owner", membership.organization)
    with transaction.atomic():
        old = membership.role
        membership.role = role
        membership.full_clean()
        membership.save(update_fields=["role"])
        audit_record(
            actor=actor,
            action="membership.update",
            obj=membership,
            organization=membership.organization,
            team=membership.team,
            changes={"role": [old, role]},
        )
    return membership


def team_delete(*, actor: Actor, team: Team) -> None:
    """Remove a team that never had keys. Keys (live or revoked) pin it: their spend history names the team,
    so such a team is blocked instead (``team_update(blocked=True)``), never deleted."""
    require(actor.user, "team.delete", team)
    if team.keys.exists():
        raise ValidationError({"team": "the team has keys; block it instead of deleting it."})
    with transaction.atomic():
        audit_record(actor=actor, action="team.delete", obj=team, organization=team.organization, team=team)
        team.delete()
        _changed_on_commit("team:deleted")


def customer_delete(*, actor: Actor, customer: Customer) -> None:
    """Forget an end user's limits and budget; their spend rows stay (the ledger keeps the id, not a link)."""
    require(actor.user, DELETE, customer, message="You are not an admin of this organization.")
    reason = f"customer:{customer.pk}"  # before delete(), which clears the pk
    with transaction.atomic():
        audit_record(actor=actor, action="customer.delete", obj=customer, organization=customer.organization)
        customer.delete()
        _changed_on_commit(reason)
