"""The one tenant-scoping choke point.

Every admin page, REST endpoint, report and dashboard query reaches tenant data through
``Model.objects.restrict(user, action)``. Nothing filters by tenant by hand.

A model opts in by using ``TenantManager`` and declaring ``TENANT_PATHS``: the lookups from the
model to its organization, its team and its owning user ("" means the model itself).

Rules:
- superusers (and the master key, which acts as a superuser) see and change everything;
- organization owners/admins see and change everything in their organization;
- organization members/viewers see their organization's objects;
- team owners/admins see and change everything in their team, and see their organization's
  organization-level objects (deployments, customers) and the shared deployments;
- team members see their team, their organization (its name) and their own objects, and change their
  own objects;
- team viewers see the same as members and change nothing.

Deployments carry upstream addresses and settings that members have no use for: what they need (which
models exist and what they cost) is the ``USE`` action, read by ``GET /api/v1/models/`` (names and
prices only), never shown as rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from operator import and_, or_

from django.apps import apps as django_apps
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Q

VIEW = "view"
CHANGE = "change"
# Organization-level resources a member's keys may call (deployments): for listing names and prices only.
USE = "use"

# Deleting reaches the same rows as changing (a service may ask for a named action on top).
DELETE = "delete"

# Role rules of named actions: who, relative to the object's tenant paths, may do it. Superusers may
# do everything. ORG_ADMIN: an admin of the object's organization; ADMIN: that, or an admin of the
# object's team; MEMBER: that, or a member (not a viewer) of the object's team; OWNER: the object's
# owner (for a person, themself); SUPERUSER: nobody else;
# TENANT_ADMIN: an admin of any tenant (an action on no object, e.g. creating a person).
SUPERUSER = "superuser"
ORG_ADMIN = "org_admin"
ADMIN = "admin"
MEMBER = "member"
OWNER = "owner"
TENANT_ADMIN = "tenant_admin"

ADMIN_ROLES = ("owner", "admin")
MEMBER_ROLES = ("owner", "admin", "member")


@dataclass(frozen=True)
class TenantPaths:
    organization: str | None = None
    team: str | None = None
    owner: str | None = None
    # Rows whose organization is empty are shared with every tenant (read-only for non-superusers).
    shared: bool = False


@dataclass(frozen=True)
class UserTenancy:
    """Which organizations and teams a user reaches, and with what rights."""

    is_superuser: bool
    user_id: int | None
    org_admin: frozenset[int]
    org_view: frozenset[int]
    team_admin: frozenset[int]
    team_view: frozenset[int]
    team_member: frozenset[int]
    # Organizations of the teams the user belongs to (any role): the organization row itself, and USE.
    team_orgs: frozenset[int] = frozenset()
    # Organizations of the teams the user administers: read access to org-level objects (deployments, customers).
    team_admin_orgs: frozenset[int] = frozenset()

    @property
    def is_tenant_admin(self) -> bool:
        return self.is_superuser or bool(self.org_admin or self.team_admin)


def tenancy_for(user) -> UserTenancy:
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return UserTenancy(False, None, frozenset(), frozenset(), frozenset(), frozenset(), frozenset())
    if user.is_superuser:
        return UserTenancy(True, user.pk, frozenset(), frozenset(), frozenset(), frozenset(), frozenset())
    cached = getattr(user, "_tenancy_cache", None)
    if cached is not None:
        return cached
    # Through the app registry, not an import: the models import this module (TenantQuerySet, TenantPaths),
    # so scoping stays below them and there is no models <-> scoping circle.
    Membership = django_apps.get_model("teams", "Membership")

    org_admin, org_view, team_admin, team_view, team_member, team_orgs = set(), set(), set(), set(), set(), set()
    team_admin_orgs: set[int] = set()
    for org_id, team_id, role in Membership.objects.filter(user=user).values_list("organization_id", "team_id", "role"):
        if team_id is None:
            org_view.add(org_id)
            if role in ADMIN_ROLES:
                org_admin.add(org_id)
        else:
            team_view.add(team_id)
            team_orgs.add(org_id)
            if role in ADMIN_ROLES:
                team_admin.add(team_id)
                team_admin_orgs.add(org_id)
            if role in MEMBER_ROLES:
                team_member.add(team_id)
    tenancy = UserTenancy(
        False,
        user.pk,
        frozenset(org_admin),
        frozenset(org_view),
        frozenset(team_admin),
        frozenset(team_view),
        frozenset(team_member),
        frozenset(team_orgs),
        frozenset(team_admin_orgs),
    )
    user._tenancy_cache = tenancy
    return tenancy


def _lookup(path: str, suffix: str) -> str:
    return f"{path}__{suffix}" if path else suffix


@dataclass(frozen=True)
class _Cond:
    """One condition on a tenant path: its pk ``in`` a set, ``is`` one id, or ``null`` (a shared row)."""

    path: str
    op: str
    value: object = None

    def q(self) -> Q:
        if self.op == "in":
            return Q(**{_lookup(self.path, "pk__in"): self.value})
        if self.op == "is":
            return Q(**{_lookup(self.path, "pk"): self.value})
        return Q(**{f"{self.path}__isnull": True})

    def holds(self, value) -> bool:
        if self.op == "in":
            return value is not None and value in self.value
        if self.op == "is":
            return value is not None and value == self.value
        return value is None


# A rule is a list of alternatives, each a conjunction of conditions; None means everything.
Clauses = list[tuple[_Cond, ...]] | None


def _visibility_clauses(paths: TenantPaths, tenancy: UserTenancy, action: str) -> Clauses:
    """What ``tenancy`` may VIEW, CHANGE or USE (the rules in this module's docstring)."""
    if action == USE and paths.team is not None:
        action = VIEW  # USE only widens organization-level resources
    clauses: list[tuple[_Cond, ...]] = []
    orgs = tenancy.org_admin if action == CHANGE else tenancy.org_view
    if action == VIEW and paths.team is None:
        orgs = orgs | tenancy.team_admin_orgs
        if paths.organization == "":
            orgs = orgs | tenancy.team_orgs  # the organization row itself: its name, for everyone in it
    if action == USE:
        orgs = orgs | tenancy.team_orgs
    if paths.organization is not None and orgs:
        clauses.append((_Cond(paths.organization, "in", orgs),))
    teams_full = tenancy.team_admin
    if paths.team is not None and teams_full:
        clauses.append((_Cond(paths.team, "in", teams_full),))
    if action == VIEW and paths.team == "" and tenancy.team_view:
        # Members see the teams they belong to (but only their own objects inside them).
        clauses.append((_Cond("", "in", tenancy.team_view),))
    may_own = action == VIEW or tenancy.team_member or tenancy.org_admin
    if paths.owner is not None and tenancy.user_id is not None and may_own:
        owner = _Cond(paths.owner, "is", tenancy.user_id)
        if action == CHANGE and paths.team is not None:
            clauses.append((owner, _Cond(paths.team, "in", tenancy.team_member | tenancy.team_admin)))
        else:
            clauses.append((owner,))
    if paths.shared and paths.organization:
        # Shared rows: readable by tenant admins, usable by anyone in some tenant.
        readers = tenancy.org_view or tenancy.team_admin
        if (action == VIEW and readers) or (action == USE and (readers or tenancy.team_view)):
            clauses.append((_Cond(paths.organization, "null"),))
    return clauses


def _role_clauses(paths: TenantPaths, tenancy: UserTenancy, rule: str) -> Clauses:
    """The rows a named action's role rule reaches (superusers were answered before)."""
    clauses: list[tuple[_Cond, ...]] = []
    if rule in (ORG_ADMIN, ADMIN, MEMBER) and paths.organization is not None and tenancy.org_admin:
        clauses.append((_Cond(paths.organization, "in", tenancy.org_admin),))
    if rule in (ADMIN, MEMBER) and paths.team is not None and tenancy.team_admin:
        clauses.append((_Cond(paths.team, "in", tenancy.team_admin),))
    if rule == MEMBER and paths.team is not None and tenancy.team_member:
        clauses.append((_Cond(paths.team, "in", tenancy.team_member),))
    if rule == OWNER and paths.owner is not None and tenancy.user_id is not None:
        clauses.append((_Cond(paths.owner, "is", tenancy.user_id),))
    return clauses


def _clauses(paths: TenantPaths, tenancy: UserTenancy, action: str) -> Clauses:
    if tenancy.is_superuser:
        return None
    if action == DELETE:
        action = CHANGE  # whoever may change a row may delete it; services refuse more by a named action
    if action in (VIEW, CHANGE, USE):
        return _visibility_clauses(paths, tenancy, action)
    rule = _named(action).rule
    if rule in (VIEW, CHANGE, USE):
        return _visibility_clauses(paths, tenancy, rule)
    if rule == TENANT_ADMIN:
        raise ValueError(f"{action!r} is not about one object: ask may(user, {action!r}) without one.")
    return _role_clauses(paths, tenancy, rule)


def tenant_q(paths: TenantPaths, tenancy: UserTenancy, action: str) -> Q | None:
    """The filter for what ``tenancy`` may ``action``; None means everything."""
    clauses = _clauses(paths, tenancy, action)
    if clauses is None:
        return None
    if not clauses:
        return Q(pk__in=[])
    return reduce(or_, (reduce(and_, (cond.q() for cond in clause)) for clause in clauses))


@dataclass(frozen=True)
class Action:
    """A named action: the role rule it needs, the models it is asked about, what a refusal says."""

    rule: str
    on: tuple[str, ...]
    refusal: str


# Role rules that are actions rather than visibility, in one table. ``on`` names the models (by
# ``app_label.model``) whose rows the action is decided on; empty: the action is about no one object.
ACTIONS: dict[str, Action] = {
    "organization.create": Action(SUPERUSER, (), "Only a superuser may do this."),
    # Limits, budget, allowed models, blocked: an org admin can't raise their own ceiling.
    "organization.set_ceiling": Action(SUPERUSER, ("teams.organization",), "Only a superuser may do this."),
    "team.create": Action(ORG_ADMIN, ("teams.organization",), "You are not an admin of this organization."),
    # A team admin renames their team; its organization sets the ceiling.
    "team.set_ceiling": Action(ORG_ADMIN, ("teams.team",), "You are not an admin of this organization."),
    # Teams are the organization's to remove, not their own admins'.
    "team.delete": Action(ORG_ADMIN, ("teams.team",), "You are not an admin of this organization."),
    "customer.upsert": Action(ORG_ADMIN, ("teams.organization",), "You are not an admin of this organization."),
    "user.create": Action(TENANT_ADMIN, (), "Only admins may create users."),
    # One person may belong to several tenants: no tenant sets their limits or deactivates them.
    "user.set_limits": Action(SUPERUSER, (), "Only a superuser may set user-level limits."),
    # A person changes their own name and email; tenant admins don't edit people (see user.set_limits).
    "user.update": Action(OWNER, ("teams.user",), "Only a superuser may change other people."),
    "user.offboard": Action(ORG_ADMIN, ("teams.organization",), "You are not an admin of this organization."),
    # Asked about the team (or, for an organization-wide role, the organization) the person joins.
    "membership.create": Action(ADMIN, ("teams.team", "teams.organization"), "You are not an admin of this team."),
    # A member sees their own membership but neither changes nor removes it: admins of its place do.
    "membership.change": Action(ADMIN, ("teams.membership",), "You are not an admin of this team."),
    "membership.owner": Action(
        ORG_ADMIN, ("teams.organization",), "Only organization admins may appoint or demote owners."
    ),
    # Members create their own keys, admins anyone's: asked about the key about to be created.
    "key.create": Action(CHANGE, ("keys.virtualkey",), "You may not manage keys for this team."),
    # The teams offered for a new key: where "key.create" allows the person at least a key of their own.
    "team.create_keys": Action(MEMBER, ("teams.team",), "You may not manage keys for this team."),
    # Unblocking or extending a key: only an admin of its team undoes what an admin imposed.
    "key.loosen": Action(ADMIN, ("keys.virtualkey",), "Only an admin of the team may do this."),
    # A member with a blocked key in the team can't mint a fresh one; an admin of the team still can.
    "key.create_while_blocked": Action(
        ADMIN,
        ("keys.virtualkey",),
        "One of your keys in this team is blocked; an admin of the team must lift the block before you create keys.",
    ),
    # Blocking a departing person's keys: each key needs an admin of its team.
    "key.suspend": Action(ADMIN, ("keys.virtualkey",), "You are not an admin of every team this person has keys in."),
    # Shared deployments (no organization) are the operator's: asked about the deployment as it would be.
    "deployment.create": Action(CHANGE, ("proxy.modeldeployment",), "You may not manage these deployments."),
    # Shared access groups (no organization) are the operator's, an organization's own its admins'.
    "access_group.create": Action(CHANGE, ("teams.modelaccessgroup",), "You may not manage these access groups."),
    # Priority shares model capacity across every tenant.
    "key.set_priority": Action(SUPERUSER, (), "Only a superuser may change a key's priority."),
    # A log sink receives every record of its organization or team: an admin of that place sets it up.
    "log_sink.manage": Action(ADMIN, ("sinks.logsink",), "You may not manage this organization's or team's log sinks."),
    "api_token.create": Action(OWNER, ("teams.user",), "You may only create tokens for yourself."),
    "api_token.delete": Action(OWNER, ("keys.apitoken",), "You may only delete your own tokens."),
    # Single sign-on rules grant memberships in an organization: its owners and admins write them.
    "sso_mapping.change": Action(
        ORG_ADMIN, ("sso.groupmapping",), "Only the organization's owners may change sign-on rules."
    ),
}

DEFAULT_REFUSAL = "You may not do this."


def _named(action: str) -> Action:
    try:
        return ACTIONS[action]
    except KeyError:
        raise ValueError(f"unknown action {action!r}: add it to ACTIONS") from None


def _check_model(action: str, model) -> None:
    """A misspelt action or one asked about the wrong model is a programming error, also for superusers."""
    if action in (VIEW, CHANGE, DELETE, USE):
        return
    if model._meta.label_lower not in _named(action).on:
        raise ValueError(f"{action!r} is decided on {ACTIONS[action].on or 'no object'}, not {model._meta.label}")


class _NeedsQuery(Exception):
    """A tenant path crosses a many-valued relation (a user's memberships): only the database knows."""


def _path_value(obj, path: str):
    """The pk at the end of ``path`` from ``obj``, read from loaded attributes (a foreign key id costs nothing)."""
    if path == "":
        return obj.pk
    parts = path.split("__")
    target = obj
    for index, part in enumerate(parts):
        field = target._meta.get_field(part)
        if not field.concrete or not (field.many_to_one or field.one_to_one):
            raise _NeedsQuery(path)
        if index == len(parts) - 1:
            return getattr(target, field.attname)
        target = getattr(target, field.name)  # one row at most, cached on the object after the first time
        if target is None:
            return None
    return None  # unreachable: the loop returns on its last part


def _as_tenancy(user) -> UserTenancy:
    return user if isinstance(user, UserTenancy) else tenancy_for(user)


def may(user, action: str, obj=None) -> bool:
    """Whether ``user`` may ``action`` ``obj``: exactly when ``obj`` is in ``restrict(user, action)``.

    Decided from the same clauses as ``restrict``, evaluated on the object's loaded tenant path (no
    query for a foreign key), or by asking ``restrict`` when the path crosses a many-valued relation.
    ``obj`` may be unsaved (the key about to be created), as long as its paths are foreign keys.
    Named actions on no object (``ACTIONS[...].on`` empty) are asked with ``obj=None``.
    """
    tenancy = _as_tenancy(user)
    if obj is None:
        named = _named(action)
        if named.on:
            raise ValueError(f"{action!r} is decided on an object of {named.on}")
        if named.rule == TENANT_ADMIN:
            return tenancy.is_tenant_admin
        return tenancy.is_superuser
    model = obj.__class__  # not type(): request.user is a lazy proxy
    _check_model(action, model)
    clauses = _clauses(model.TENANT_PATHS, tenancy, action)
    if clauses is None:
        return True
    try:
        values: dict[str, object] = {}
        for clause in clauses:
            for cond in clause:
                if cond.path not in values:
                    values[cond.path] = _path_value(obj, cond.path)
            if all(cond.holds(values[cond.path]) for cond in clause):
                return True
        return False
    except _NeedsQuery:
        if obj.pk is None:
            raise ValueError(f"{model._meta.label}: an unsaved object's tenant path needs the database") from None
        return model._default_manager.restrict(tenancy, action).filter(pk=obj.pk).exists()


def require(user, action: str, obj=None, *, message: str | None = None) -> None:
    """``may`` for services: raises ``PermissionDenied`` (a 403 in the API, a form error in the admin)."""
    if not may(user, action, obj):
        named = ACTIONS.get(action)
        raise PermissionDenied(message or (named.refusal if named else DEFAULT_REFUSAL))


class TenantQuerySet(models.QuerySet):
    def restrict(self, user, action: str = VIEW) -> TenantQuerySet:
        tenancy = _as_tenancy(user)
        _check_model(action, self.model)
        q = tenant_q(self.model.TENANT_PATHS, tenancy, action)
        if q is None:
            return self
        paths = self.model.TENANT_PATHS
        needs_distinct = any("__" in (p or "") for p in (paths.organization, paths.team, paths.owner))
        qs = self.filter(q)
        return qs.distinct() if needs_distinct else qs


TenantManager = models.Manager.from_queryset(TenantQuerySet)
