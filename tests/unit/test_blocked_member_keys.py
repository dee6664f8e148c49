"""Rule: a block on a member's key stops that member minting a fresh key in the team until an admin lifts it.

bob is an Alpha member, alice Alpha's admin. Enforced in ``key_create``, so the REST API and the admin
answer the same.
"""

import pytest
from django.test import Client

from apps.keys.models import VirtualKey
from tests.factories import MembershipFactory, TeamFactory, VirtualKeyFactory
from tests.support.api import client_for
from tests.unit.test_admin_keys import ADD, key_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def bobs_blocked_key(alpha, bob, alice):
    key = VirtualKeyFactory(team=alpha, user=bob, alias="bob-key")
    assert client_for(alice).post(f"/api/v1/keys/{key.pk}/block/").status_code == 200
    return key


def bobs_keys(bob) -> int:
    return VirtualKey.objects.filter(user=bob).count()


def test_blocked_member_cannot_mint_a_fresh_key_over_rest(alpha, bob, bobs_blocked_key):
    response = client_for(bob).post("/api/v1/keys/", {"team": alpha.pk, "alias": "fresh"}, format="json")
    assert response.status_code == 403, response.content
    assert "blocked" in response.json()["detail"]
    assert bobs_keys(bob) == 1


def test_blocked_member_cannot_mint_a_fresh_key_in_the_admin(alpha, bob, bobs_blocked_key):
    browser = Client()
    browser.force_login(bob)
    response = browser.post(ADD, key_form(alpha, alias="fresh"))
    assert response.status_code == 200 and "blocked" in response.content.decode()
    assert bobs_keys(bob) == 1


def test_unblocking_lifts_the_rule_and_revoking_the_blocked_key_does_too(alpha, bob, alice, bobs_blocked_key):
    assert client_for(alice).post(f"/api/v1/keys/{bobs_blocked_key.pk}/unblock/").status_code == 200
    response = client_for(bob).post("/api/v1/keys/", {"team": alpha.pk, "alias": "fresh"}, format="json")
    assert response.status_code == 201, response.content

    second = VirtualKey.objects.get(pk=response.json()["id"])
    assert client_for(alice).post(f"/api/v1/keys/{second.pk}/block/").status_code == 200
    assert client_for(bob).post("/api/v1/keys/", {"team": alpha.pk}, format="json").status_code == 403
    assert client_for(alice).post(f"/api/v1/keys/{second.pk}/revoke/").status_code == 200
    assert client_for(bob).post("/api/v1/keys/", {"team": alpha.pk}, format="json").status_code == 201


def test_an_admin_may_still_issue_the_member_a_key(alpha, bob, alice, bobs_blocked_key):
    response = client_for(alice).post("/api/v1/keys/", {"team": alpha.pk, "user": bob.pk}, format="json")
    assert response.status_code == 201, response.content


def test_the_block_holds_only_in_its_team(acme, alpha, bob, bobs_blocked_key):
    beta = TeamFactory(organization=acme, name="Beta")
    MembershipFactory(user=bob, team=beta, organization=acme, role="member")
    response = client_for(bob).post("/api/v1/keys/", {"team": beta.pk}, format="json")
    assert response.status_code == 201, response.content
