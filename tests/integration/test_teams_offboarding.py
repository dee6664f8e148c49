"""Rule: removing a person from a team (or offboarding them from the organization) stops their keys there.

Against a real uvicorn gateway with the Redis auth-cache invalidation: the key works, the person is
removed (REST ``DELETE /api/v1/members/{id}/``, the admin's delete page, the admin's *Offboard*
action, ``POST /api/v1/users/{id}/offboard/``), and within the 2 s of a revocation the key answers
401 on /v1. Re-adding the person brings nothing back; only an admin's explicit unblock does.
"""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.test import Client

from apps.keys.models import VirtualKey
from apps.teams.models import AuditEvent, Membership
from tests.factories import MembershipFactory, TeamFactory, UserFactory
from tests.support.api import client_for
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import deploy, http, make_key, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

PROMISE_SECONDS = 2.0  # the same promise as revocation (the auth cache TTL itself is 30 s)


@pytest.fixture(autouse=True)
def _needs_redis():
    if not settings.REDIS_URL:
        pytest.skip("needs the Redis started by scripts/test.sh")


@pytest.fixture
def model(gateway, upstream) -> str:
    name = unique_name("offb")
    deploy(gateway, {"model_name": name, "provider": "openai", "model": "ok", "api_base": upstream.url})
    return name


@pytest.fixture
def olga(tenant):
    """An organization admin of Acme (alice's organization)."""
    user = UserFactory(username="olga")
    MembershipFactory(user=user, team=None, organization=tenant.acme, role="admin")
    return user


def chat_status(gateway, secret: str, model: str) -> int:
    response = http(
        "POST",
        gateway.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": model, "messages": [{"role": "user", "content": "hello"}]},
    )
    return response.status_code


def assert_stops(gateway, key, model: str, remove) -> None:
    """The key works (and is cached by the worker), ``remove()`` runs, and 2 s later the key gets 401."""
    assert chat_status(gateway, key.secret, model) == 200
    remove()
    time.sleep(PROMISE_SECONDS)
    assert chat_status(gateway, key.secret, model) == 401
    key.refresh_from_db()
    assert key.blocked and key.revoked_at is None  # suspended, not destroyed: an admin can bring it back
    event = AuditEvent.objects.filter(action="key.block", object_id=str(key.pk)).latest("created_at")
    assert event.changes["reason"]


def assert_back_after_unblock(gateway, key, model: str, admin) -> None:
    response = client_for(admin).post(f"/api/v1/keys/{key.pk}/unblock/")
    assert response.status_code == 200, response.content
    time.sleep(PROMISE_SECONDS)
    assert chat_status(gateway, key.secret, model) == 200


def test_rest_member_removal_stops_the_key_until_an_admin_unblocks_it(gateway, model, tenant, olga):
    key = tenant.alice_key
    membership = Membership.objects.get(user=tenant.alice, team=tenant.alpha)
    admin = client_for(olga)

    def remove():
        assert admin.delete(f"/api/v1/members/{membership.pk}/").status_code == 204

    assert_stops(gateway, key, model, remove)
    # Coming back to the team is not enough: the old key stays blocked ...
    # (a person outside every team of olga's is invisible to her, so the operator re-adds alice)
    root = UserFactory(username="root", is_superuser=True)
    response = client_for(root).post(
        "/api/v1/members/", {"user": tenant.alice.pk, "team": tenant.alpha.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    time.sleep(PROMISE_SECONDS)
    assert chat_status(gateway, key.secret, model) == 401
    # ... and alice cannot lift the block herself; an admin's explicit unblock can.
    assert client_for(tenant.alice).post(f"/api/v1/keys/{key.pk}/unblock/").status_code == 403
    assert_back_after_unblock(gateway, key, model, olga)


def test_admin_membership_delete_stops_the_key(gateway, model, tenant, olga):
    key = tenant.alice_key
    membership = Membership.objects.get(user=tenant.alice, team=tenant.alpha)
    browser = Client()
    browser.force_login(olga)

    def remove():
        response = browser.post(f"/admin/teams/membership/{membership.pk}/delete/", {"post": "yes"})
        assert response.status_code == 302 and not Membership.objects.filter(pk=membership.pk).exists()

    assert_stops(gateway, key, model, remove)
    assert_back_after_unblock(gateway, key, model, olga)


def test_admin_offboard_action_stops_keys_in_every_team(gateway, model, tenant, olga):
    beta = TeamFactory(organization=tenant.acme, name="Beta")
    MembershipFactory(user=tenant.alice, team=beta, organization=tenant.acme, role="member")
    beta_key = make_key(beta, tenant.alice, alias="alice-beta")
    assert chat_status(gateway, beta_key.secret, model) == 200
    membership = Membership.objects.get(user=tenant.alice, team=tenant.alpha)
    browser = Client()
    browser.force_login(olga)

    def remove():
        browser.post("/admin/teams/membership/", {"action": "offboard_people", "_selected_action": [membership.pk]})
        assert not Membership.objects.filter(user=tenant.alice, organization=tenant.acme).exists()

    assert_stops(gateway, tenant.alice_key, model, remove)
    assert chat_status(gateway, beta_key.secret, model) == 401
    # charlie's key in another organization is untouched.
    assert chat_status(gateway, tenant.charlie_key.secret, model) == 200


def test_rest_offboard_stops_keys_and_reports_what_it_did(gateway, model, tenant, olga):
    holder: dict = {}

    def remove():
        holder["response"] = client_for(olga).post(
            f"/api/v1/users/{tenant.alice.pk}/offboard/", {"organization": tenant.acme.pk}, format="json"
        )

    assert_stops(gateway, tenant.alice_key, model, remove)
    response = holder["response"]
    assert response.status_code == 200, response.content
    assert response.json() == {
        "user": tenant.alice.pk,
        "organization": tenant.acme.pk,
        "memberships_removed": 1,
        "keys_suspended": 1,
    }
    assert AuditEvent.objects.filter(action="user.offboard", object_id=str(tenant.alice.pk)).exists()
    assert VirtualKey.objects.get(pk=tenant.charlie_key.pk).blocked is False
