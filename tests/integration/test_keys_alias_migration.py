"""Migration keys 0007 on a database that already holds duplicate aliases in a team (they were accepted before).

The oldest key of each (team, alias) keeps its name, later ones become ``alias-2``, ``alias-3``... skipping a
name the team already uses; other teams, empty aliases and unique ones are untouched; then the constraint holds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from apps.keys.models import VirtualKey
from tests.factories import OrganizationFactory, TeamFactory, VirtualKeyFactory

pytestmark = pytest.mark.integration

MIGRATION = ("keys", "0007_key_alias_unique_per_team")


def test_existing_duplicate_aliases_are_renamed_deterministically(transactional_db):
    org = OrganizationFactory()
    alpha, beta = TeamFactory(organization=org), TeamFactory(organization=org)
    executor = MigrationExecutor(connection)
    migration = executor.loader.get_migration(*MIGRATION)
    executor.migrate([], plan=[(migration, True)])  # back to before the constraint: duplicates are possible
    try:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        made = {}
        # Created out of order on purpose: the oldest by created_at keeps the alias, not the lowest id.
        for name, team, alias, age in [
            ("newest", alpha, "ci", 1),
            ("oldest", alpha, "ci", 3),
            ("middle", alpha, "ci", 2),
            ("squatter", alpha, "ci-2", 9),  # already uses the first free name: skipped
            ("beta", beta, "ci", 0),
            ("blank1", alpha, "", 0),
            ("blank2", alpha, "", 0),
        ]:
            key = VirtualKeyFactory(team=team, alias=alias)
            VirtualKey.objects.filter(pk=key.pk).update(created_at=start - timedelta(days=age))
            made[name] = key.pk
        MigrationExecutor(connection).migrate([], plan=[(migration, False)])
    finally:
        if MIGRATION not in MigrationExecutor(connection).loader.applied_migrations:
            MigrationExecutor(connection).migrate([], plan=[(migration, False)])
    aliases = {name: VirtualKey.objects.get(pk=pk).alias for name, pk in made.items()}
    assert aliases == {
        "oldest": "ci",
        "middle": "ci-3",
        "newest": "ci-4",
        "squatter": "ci-2",
        "beta": "ci",
        "blank1": "",
        "blank2": "",
    }
    with pytest.raises(IntegrityError), transaction.atomic():
        VirtualKeyFactory(team=alpha, alias="ci")
