"""Key creation can never grant more than the creator, the team or the organization has."""

from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from apps.keys.hashing import keyed_hash
from apps.keys.models import VirtualKey
from apps.keys.services import key_create, key_revoke, key_rotate
from apps.teams.audit import Actor
from apps.teams.models import AuditEvent

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
