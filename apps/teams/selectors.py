"""Reads for tenants, always through the ``.restrict`` choke point."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.teams.models import Team


def teams_administered_by(user) -> QuerySet[Team]:
    """Teams whose members ``user`` manages (team admin, or admin of the organization)."""
    return Team.objects.restrict(user, "membership.create").select_related("organization")


def teams_for_new_keys(user) -> QuerySet[Team]:
    """Teams ``user`` may create keys in: as an admin (any owner) or as a member (their own keys). Not viewers."""
    return Team.objects.restrict(user, "team.create_keys").select_related("organization")
