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
from operator import or_

from django.db import models
from django.db.models import Q

VIEW = "view"
CHANGE = "change"
# Organization-level resources a member's keys may call (deployments): for listing names and prices only.
USE = "use"

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
    from apps.teams.models import Membership

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


def tenant_q(paths: TenantPaths, tenancy: UserTenancy, action: str) -> Q | None:
    """The filter for what ``tenancy`` may ``action``; None means everything."""
    if tenancy.is_superuser:
        return None
    if action == USE and paths.team is not None:
        action = VIEW  # USE only widens organization-level resources
    clauses: list[Q] = []
    orgs = tenancy.org_admin if action == CHANGE else tenancy.org_view
    if action == VIEW and paths.team is None:
        orgs = orgs | tenancy.team_admin_orgs
        if paths.organization == "":
            orgs = orgs | tenancy.team_orgs  # the organization row itself: its name, for everyone in it
    if action == USE:
        orgs = orgs | tenancy.team_orgs
    if paths.organization is not None and orgs:
        clauses.append(Q(**{_lookup(paths.organization, "pk__in"): orgs}))
    teams_full = tenancy.team_admin
    if paths.team is not None and teams_full:
        clauses.append(Q(**{_lookup(paths.team, "pk__in"): teams_full}))
    if action == VIEW and paths.team == "" and tenancy.team_view:
        # Members see the teams they belong to (but only their own objects inside them).
        clauses.append(Q(pk__in=tenancy.team_view))
    may_own = action == VIEW or tenancy.team_member or tenancy.org_admin
    if paths.owner is not None and tenancy.user_id is not None and may_own:
        owner_q = Q(**{_lookup(paths.owner, "pk"): tenancy.user_id})
        if action == CHANGE and paths.team is not None:
            owner_q &= Q(**{_lookup(paths.team, "pk__in"): tenancy.team_member | tenancy.team_admin})
        clauses.append(owner_q)
    if paths.shared and paths.organization:
        # Shared rows: readable by tenant admins, usable by anyone in some tenant.
        readers = tenancy.org_view or tenancy.team_admin
        if (action == VIEW and readers) or (action == USE and (readers or tenancy.team_view)):
            clauses.append(Q(**{f"{paths.organization}__isnull": True}))
    if not clauses:
        return Q(pk__in=[])
    return reduce(or_, clauses)


class TenantQuerySet(models.QuerySet):
    def restrict(self, user, action: str = VIEW) -> TenantQuerySet:
        tenancy = user if isinstance(user, UserTenancy) else tenancy_for(user)
        q = tenant_q(self.model.TENANT_PATHS, tenancy, action)
        if q is None:
            return self
        paths = self.model.TENANT_PATHS
        needs_distinct = any("__" in (p or "") for p in (paths.organization, paths.team, paths.owner))
        qs = self.filter(q)
        return qs.distinct() if needs_distinct else qs


TenantManager = models.Manager.from_queryset(TenantQuerySet)
