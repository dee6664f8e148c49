"""Rule: a departure's consequences in the apps above teams run through teams' explicit hook list.

Teams (the ground floor) never imports keys; the keys app registers "block their keys" at startup
(``KeysConfig.ready()``), and ``membership_delete`` / ``user_offboard`` run every hook inside the removal's
transaction. bob is an Alpha member with a key, alice Alpha's admin, olga Acme's admin.
"""

import pytest
from django.core.exceptions import PermissionDenied

from apps.keys.apps import block_departed_keys
from apps.teams import departures
from apps.teams.audit import Actor
from apps.teams.models import Membership
from apps.teams.services import membership_delete, user_offboard
from tests.factories import VirtualKeyFactory

pytestmark = pytest.mark.django_db


def test_the_keys_app_registers_its_hook_at_startup_once():
    assert departures.departure_hooks().count(block_departed_keys) == 1
    departures.departure_hook_register(block_departed_keys)  # a second ready() adds nothing
    assert departures.departure_hooks().count(block_departed_keys) == 1


def test_every_hook_sees_the_departure_and_offboarding_reports_the_keys_it_blocked(monkeypatch, alpha, olga, bob):
    key = VirtualKeyFactory(team=alpha, user=bob)
    seen = []
    monkeypatch.setattr(departures, "_hooks", [*departures.departure_hooks(), lambda d: seen.append(d) or {}])

    result = user_offboard(actor=Actor(user=olga), user=bob, organization=alpha.organization)

    assert result.keys_suspended == 1
    key.refresh_from_db()
    assert key.blocked
    assert [(d.user, d.organization, d.team, d.reason) for d in seen] == [
        (bob, alpha.organization, None, "owner offboarded from the organization")
    ]


def test_a_hook_that_refuses_rolls_the_whole_removal_back(monkeypatch, alpha, alice, bob):
    key = VirtualKeyFactory(team=alpha, user=bob)

    def refuse(departure):
        raise PermissionDenied("not yours")

    monkeypatch.setattr(departures, "_hooks", [*departures.departure_hooks(), refuse])
    membership = Membership.objects.get(user=bob, team=alpha)

    with pytest.raises(PermissionDenied):
        membership_delete(actor=Actor(user=alice), membership=membership)

    assert Membership.objects.filter(user=bob, team=alpha).exists()
    key.refresh_from_db()
    assert not key.blocked  # the keys hook ran first, and its block was rolled back with the removal
