"""Memberships from groups: what the mapping rules grant a person, applied through the teams services.

Only memberships single sign-on created (an ``SsoGrant``) are changed or removed here; a membership an
admin made by hand is left alone, even where a rule names the same place. Every write goes through
``membership_create`` / ``membership_update`` / ``membership_delete``, so each is audited and a removal
from a team suspends the person's keys there, exactly as when an admin removes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from apps.sso.models import GroupMapping, MatchKind, SsoGrant, SsoIdentity
from apps.teams.audit import Actor
from apps.teams.models import Membership, Organization, Role, Team
from apps.teams.services import membership_create, membership_delete, membership_update

# Where several rules name one place, the strongest role wins.
ROLE_RANK = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}

Place = tuple[int, int | None]  # (organization id, team id or None for an organization-wide role)


@dataclass(frozen=True)
class SyncResult:
    created: int = 0
    updated: int = 0
    removed: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.removed)


def places_granted(*, groups: tuple[str, ...], client_id: str = "") -> dict[Place, str]:
    """The role each place gets from the rules matching ``groups`` (and a service account's ``client_id``)."""
    rules = GroupMapping.objects.filter(kind=MatchKind.GROUP, value__in=list(groups))
    if client_id:
        rules = rules | GroupMapping.objects.filter(kind=MatchKind.CLIENT, value=client_id)
    granted: dict[Place, str] = {}
    for org_id, team_id, role in rules.values_list("organization_id", "team_id", "role"):
        place = (org_id, team_id)
        if place not in granted or ROLE_RANK[Role(role)] > ROLE_RANK[Role(granted[place])]:
            granted[place] = role
    return granted


def memberships_sync(
    *, actor: Actor, identity: SsoIdentity, groups: tuple[str, ...], client_id: str = ""
) -> SyncResult:
    """Make the person's single-sign-on memberships exactly what the rules grant for ``groups``."""
    granted = places_granted(groups=groups, client_id=client_id)
    user = identity.user
    created = updated = removed = 0
    with transaction.atomic():
        mine = {
            (grant.membership.organization_id, grant.membership.team_id): grant.membership
            for grant in SsoGrant.objects.select_related("membership__organization", "membership__team").filter(
                identity=identity
            )
        }
        for place, membership in mine.items():
            role = granted.get(place)
            if role is None:
                membership_delete(actor=actor, membership=membership)
                removed += 1
            elif role != membership.role:
                membership_update(actor=actor, membership=membership, role=role)
                updated += 1
        by_hand = set(
            Membership.objects.filter(user=user)
            .exclude(sso_grant__isnull=False)
            .values_list("organization_id", "team_id")
        )
        wanted = [place for place in granted if place not in mine and place not in by_hand]
        orgs = Organization.objects.in_bulk({org_id for org_id, _ in wanted})
        teams = Team.objects.in_bulk({team_id for _, team_id in wanted if team_id is not None})
        for org_id, team_id in wanted:
            membership = membership_create(
                actor=actor,
                user=user,
                organization=orgs[org_id],
                team=teams[team_id] if team_id is not None else None,
                role=granted[(org_id, team_id)],
            )
            SsoGrant.objects.create(membership=membership, identity=identity)
            created += 1
    return SyncResult(created=created, updated=updated, removed=removed)
