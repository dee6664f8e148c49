"""Reads for tenants, always through the ``.restrict`` choke point."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from apps.teams.models import Team
from apps.teams.scoping import CHANGE, VIEW, tenancy_for


def teams_administered_by(user) -> QuerySet[Team]:
    """Teams whose members and settings ``user`` manages (team admin, or admin of the organization)."""
    return Team.objects.restrict(user, CHANGE).select_related("organization")


def teams_for_new_keys(user) -> QuerySet[Team]:
    """Teams ``user`` may create keys in: as an admin (any owner) or as a member (their own keys). Not viewers."""
    tenancy = tenancy_for(user)
    teams = Team.objects.restrict(user, VIEW).select_related("organization")
    if tenancy.is_superuser:
        return teams
    allowed = Q(pk__in=tenancy.team_member | tenancy.team_admin) | Q(organization_id__in=tenancy.org_admin)
    return teams.filter(allowed)
