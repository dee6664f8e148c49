"""Key creation can never grant more than the creator, the team or the organization has."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from apps.keys.hashing import keyed_hash
from apps.keys.models import VirtualKey
from apps.keys.services import key_create, key_revoke, key_rotate, key_set_blocked, key_update
from apps.teams.audit import Actor
from apps.teams.models import AuditEvent
from apps.teams.services import team_update

pytestmark = pytest.mark.django_db


def test_alice_creates_a_key_whose_secret_is_stored_only_as_a_keyed_hash(alpha, alice):
    issued = key_create(actor=Actor(alice), team=alpha, alias="ci")
    row = VirtualKey.objects.get(pk=issued.key.pk)
    assert issued.secret.startswith("sk-gw-")
    assert row.key_hash == keyed_hash(issued.secret)
    assert issued.secret not in row.prefix and row.prefix.endswith(issued.secret[-4:])
    assert AuditEvent.objects.filter(action="key.create", object_id=str(row.pk), actor=alice).exists()


def test_a_key_cannot_exceed_its_teams_budget_or_models(alpha, alice):
    alpha.max_budget = Decimal("10")
    alpha.allowed_models = ["gpt-4o-mini"]
    alpha.save()
    with pytest.raises(ValidationError) as err:
        key_create(actor=Actor(alice), team=alpha, max_budget=Decimal("11"), allowed_models=["gpt-4o"])
    assert set(err.value.message_dict) == {"max_budget", "models"}


def test_bobs_key_is_always_his_own_and_within_his_user_limits(alpha, alice, bob):
    bob.rpm_limit = 5
    bob.save()
    issued = key_create(actor=Actor(bob), team=alpha)
    assert issued.key.user == bob
    with pytest.raises(ValidationError):
        key_create(actor=Actor(bob), team=alpha, rpm_limit=6)
    with pytest.raises(PermissionDenied):
        key_create(actor=Actor(bob), team=alpha, user=alice)


def test_charlie_cannot_create_keys_in_alpha(alpha, charlie):
    with pytest.raises(PermissionDenied):
        key_create(actor=Actor(charlie), team=alpha)


def test_vera_the_viewer_cannot_create_keys(alpha, vera):
    with pytest.raises(PermissionDenied):
        key_create(actor=Actor(vera), team=alpha)


def test_rotation_replaces_the_secret_and_revocation_is_final(alpha, alice):
    issued = key_create(actor=Actor(alice), team=alpha)
    rotated = key_rotate(actor=Actor(alice), key=issued.key)
    assert rotated.secret != issued.secret
    assert not VirtualKey.objects.filter(key_hash=keyed_hash(issued.secret)).exists()
    key_revoke(actor=Actor(alice), key=rotated.key)
    with pytest.raises(ValidationError):
        key_rotate(actor=Actor(alice), key=rotated.key)


def test_bob_cannot_raise_his_keys_priority_only_a_superuser_can(alpha, alice, bob, root):
    issued = key_create(actor=Actor(bob), team=alpha)
    with pytest.raises(PermissionDenied):
        key_update(actor=Actor(bob), key=issued.key, priority=100)
    with pytest.raises(PermissionDenied):
        key_update(actor=Actor(alice), key=issued.key, priority=100)
    with pytest.raises(PermissionDenied):
        key_create(actor=Actor(bob), team=alpha, priority=100)
    assert key_update(actor=Actor(root), key=issued.key, priority=3).priority == 3


def test_a_keys_session_caps_stay_within_the_teams(alpha, bob):
    alpha.session_max_budget = Decimal("1")
    alpha.session_max_iterations = 10
    alpha.save()
    with pytest.raises(ValidationError) as err:
        key_create(actor=Actor(bob), team=alpha, session_max_budget=Decimal("5"), session_max_iterations=11)
    assert set(err.value.message_dict) == {"session_max_budget", "session_max_iterations"}
    issued = key_create(actor=Actor(bob), team=alpha, session_max_iterations=3)
    with pytest.raises(ValidationError):
        key_update(actor=Actor(bob), key=issued.key, session_max_iterations=50)


def test_alice_cannot_lift_her_teams_session_caps_her_org_admin_can(alpha, alice, olga):
    with pytest.raises(PermissionDenied):
        team_update(actor=Actor(alice), team=alpha, session_max_iterations=1000)
    assert team_update(actor=Actor(olga), team=alpha, session_max_iterations=1000).session_max_iterations == 1000


def test_bob_can_block_his_key_but_not_undo_alices_block_or_expiry(alpha, alice, bob):
    issued = key_create(actor=Actor(bob), team=alpha)
    key_set_blocked(actor=Actor(alice), key=issued.key, blocked=True)
    with pytest.raises(PermissionDenied):
        key_set_blocked(actor=Actor(bob), key=issued.key, blocked=False)
    with pytest.raises(PermissionDenied):
        key_update(actor=Actor(bob), key=issued.key, blocked=False)
    soon = timezone.now() + timedelta(days=1)
    key_update(actor=Actor(alice), key=issued.key, expires_at=soon)
    with pytest.raises(PermissionDenied):
        key_update(actor=Actor(bob), key=issued.key, expires_at=None)
    with pytest.raises(PermissionDenied):
        key_update(actor=Actor(bob), key=issued.key, expires_at=soon + timedelta(days=30))
    sooner = soon - timedelta(hours=12)
    assert key_update(actor=Actor(bob), key=issued.key, expires_at=sooner).expires_at == sooner
    key_set_blocked(actor=Actor(alice), key=issued.key, blocked=False)
    assert key_set_blocked(actor=Actor(bob), key=issued.key, blocked=True).blocked
