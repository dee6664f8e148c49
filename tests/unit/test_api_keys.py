"""The provisioning API for virtual keys, with the recurring cast: charlie is the outsider at Acme."""

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from apps.keys.hashing import keyed_hash
from apps.keys.models import VirtualKey
from apps.teams.models import AuditEvent
from tests.factories import VirtualKeyFactory
from tests.support.api import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def alices_key(alpha, alice):
    return VirtualKeyFactory(team=alpha, user=alice, alias="alice-key")


def test_master_key_creates_a_key_and_sees_the_secret_once(master, alpha):
    response = master.post(
        "/api/v1/keys/", {"team": alpha.pk, "alias": "ci", "models": ["gpt-4o-mini"], "rpm_limit": 10}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    secret = body["key"]
    assert secret.startswith("sk-")
    key = VirtualKey.objects.get(pk=body["id"])
    assert key.key_hash == keyed_hash(secret) and secret not in key.prefix
    assert key.allowed_models == ["gpt-4o-mini"] and key.rpm_limit == 10
    # Never again: not in the detail, not in the list, not in the audit trail.
    assert secret not in master.get(f"/api/v1/keys/{key.pk}/").content.decode()
    assert secret not in master.get("/api/v1/keys/").content.decode()
    assert not any(secret in str(event.changes) for event in AuditEvent.objects.all())


def test_unauthenticated_and_wrong_bearer_are_refused(alpha, master_key):
    assert APIClient().get("/api/v1/keys/").status_code in (401, 403)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer sk-master-wrong")
    assert client.get("/api/v1/keys/").status_code == 401


def test_charlie_cannot_see_or_touch_alices_key(alices_key, charlie):
    client = client_for(charlie)
    assert alices_key.alias not in client.get("/api/v1/keys/").content.decode()
    assert client.get(f"/api/v1/keys/{alices_key.pk}/").status_code == 404
    assert client.patch(f"/api/v1/keys/{alices_key.pk}/", {"rpm_limit": 1}, format="json").status_code == 404
    for verb in ("revoke", "rotate", "block", "unblock"):
        assert client.post(f"/api/v1/keys/{alices_key.pk}/{verb}/").status_code == 404
    alices_key.refresh_from_db()
    assert alices_key.status == "active" and alices_key.rpm_limit is None


def test_charlie_cannot_create_a_key_in_alpha(alpha, charlie):
    response = client_for(charlie).post("/api/v1/keys/", {"team": alpha.pk, "alias": "sneaky"}, format="json")
    assert response.status_code == 400
    assert "team" in response.json()
    assert not VirtualKey.objects.filter(alias="sneaky").exists()


def test_bob_sees_only_his_own_keys(alpha, alices_key, bob):
    bobs = VirtualKeyFactory(team=alpha, user=bob, alias="bob-key")
    client = client_for(bob)
    ids = [row["id"] for row in client.get("/api/v1/keys/").json()["results"]]
    assert ids == [bobs.pk]
    assert client.get(f"/api/v1/keys/{alices_key.pk}/").status_code == 404
    assert client.post(f"/api/v1/keys/{bobs.pk}/revoke/").status_code == 200
    bobs.refresh_from_db()
    assert bobs.status == "revoked"


def test_bob_creates_his_own_key_but_not_one_for_alice(alpha, alice, bob):
    client = client_for(bob)
    response = client.post("/api/v1/keys/", {"team": alpha.pk, "alias": "mine"}, format="json")
    assert response.status_code == 201
    assert VirtualKey.objects.get(pk=response.json()["id"]).user == bob
    # A member doesn't even see the other people in the team: alice "does not exist" for him.
    response = client.post("/api/v1/keys/", {"team": alpha.pk, "user": alice.pk}, format="json")
    assert response.status_code == 400 and "user" in response.json()
    assert not VirtualKey.objects.filter(user=alice).exists()


def test_vera_the_viewer_changes_nothing(alpha, vera):
    own = VirtualKeyFactory(team=alpha, user=vera)
    client = client_for(vera)
    assert client.get(f"/api/v1/keys/{own.pk}/").status_code == 200
    assert client.patch(f"/api/v1/keys/{own.pk}/", {"rpm_limit": 5}, format="json").status_code == 403
    assert client.post(f"/api/v1/keys/{own.pk}/revoke/").status_code == 403
    assert client.post("/api/v1/keys/", {"team": alpha.pk}, format="json").status_code == 403
    own.refresh_from_db()
    assert own.rpm_limit is None and own.revoked_at is None


def test_key_limits_stay_within_the_team(alpha, alice):
    alpha.max_budget = Decimal("10")
    alpha.allowed_models = ["gpt-4o-mini"]
    alpha.save()
    client = client_for(alice)
    response = client.post("/api/v1/keys/", {"team": alpha.pk, "max_budget": "11"}, format="json")
    assert response.status_code == 400
    assert "max_budget" in response.json() and "team" in response.json()["max_budget"][0]
    response = client.post("/api/v1/keys/", {"team": alpha.pk, "models": ["gpt-4o"]}, format="json")
    assert response.status_code == 400 and "models" in response.json()
    response = client.post("/api/v1/keys/", {"team": alpha.pk, "max_budget": "9.5"}, format="json")
    assert response.status_code == 201
    key_id = response.json()["id"]
    response = client.patch(f"/api/v1/keys/{key_id}/", {"max_budget": "20"}, format="json")
    assert response.status_code == 400 and "max_budget" in response.json()
    assert VirtualKey.objects.get(pk=key_id).max_budget == Decimal("9.5")


def test_alice_cannot_move_a_key_to_another_team(alpha, omega, alice, alices_key):
    client = client_for(alice)
    for payload in ({"team": omega.pk}, {"organization": omega.organization_id}, {"user": alice.pk}, {"key_hash": "x"}):
        response = client.patch(f"/api/v1/keys/{alices_key.pk}/", payload, format="json")
        assert response.status_code == 400, payload
        assert next(iter(payload)) in response.json()
    alices_key.refresh_from_db()
    assert alices_key.team == alpha


def test_alice_rotates_blocks_and_revokes(alices_key, alice):
    client = client_for(alice)
    old_hash = alices_key.key_hash
    response = client.post(f"/api/v1/keys/{alices_key.pk}/rotate/")
    assert response.status_code == 200
    new_secret = response.json()["key"]
    alices_key.refresh_from_db()
    assert alices_key.key_hash == keyed_hash(new_secret) != old_hash
    assert client.post(f"/api/v1/keys/{alices_key.pk}/block/").json()["status"] == "blocked"
    assert client.post(f"/api/v1/keys/{alices_key.pk}/unblock/").json()["status"] == "active"
    assert client.post(f"/api/v1/keys/{alices_key.pk}/revoke/").json()["status"] == "revoked"
    response = client.post(f"/api/v1/keys/{alices_key.pk}/rotate/")
    assert response.status_code == 400 and "key" in response.json()


def test_bad_input_is_a_400_with_field_messages(alpha, alice):
    client = client_for(alice)
    response = client.post(
        "/api/v1/keys/", {"team": alpha.pk, "rpm_limit": -1, "budget_duration": "2w", "models": "x"}, format="json"
    )
    assert response.status_code == 400
    assert {"rpm_limit", "budget_duration", "models"} <= set(response.json())
    assert client.post("/api/v1/keys/", "{not json", content_type="application/json").status_code == 400
    assert client.get("/api/v1/keys/?team=abc").status_code == 400


def test_key_list_filters(alpha, alice, bob):
    mine = VirtualKeyFactory(team=alpha, user=alice, allowed_models=["gpt-4o"])
    other = VirtualKeyFactory(team=alpha, user=bob, allowed_models=["claude-3-5-haiku"], blocked=True)
    client = client_for(alice)

    def ids(query):
        return {row["id"] for row in client.get(f"/api/v1/keys/?{query}").json()["results"]}

    assert ids(f"user={bob.pk}") == {other.pk}
    assert ids("status=blocked") == {other.pk}
    assert ids("status=active") == {mine.pk}
    assert ids("model=gpt-4o") == {mine.pk}


@pytest.mark.parametrize(
    "model_limits",
    [
        {"gpt-4o": {"rpm": 10}},
        {"gpt-4o": {"rpm_limit": -1}},
        {"gpt-4o": {"rpm_limit": 2.5}},
        {"gpt-4o": {"max_budget": "lots"}},
        {"gpt-4o": {"budget_duration": "fortnight"}},
    ],
)
def test_malformed_model_limits_never_reach_the_hot_path(alpha, alice, alices_key, model_limits):
    client = client_for(alice)
    response = client.post("/api/v1/keys/", {"team": alpha.pk, "model_limits": model_limits}, format="json")
    assert response.status_code == 400 and "model_limits" in response.json()
    response = client.patch(f"/api/v1/keys/{alices_key.pk}/", {"model_limits": model_limits}, format="json")
    assert response.status_code == 400 and "model_limits" in response.json()
    alices_key.refresh_from_db()
    assert alices_key.model_limits == {}


def test_well_formed_model_limits_are_stored(alpha, alice):
    limits = {"gpt-4o": {"rpm_limit": 10, "tpm_limit": 1000, "max_budget": "2.5", "budget_duration": "1d"}}
    response = client_for(alice).post("/api/v1/keys/", {"team": alpha.pk, "model_limits": limits}, format="json")
    assert response.status_code == 201
    assert VirtualKey.objects.get(pk=response.json()["id"]).model_limits == limits


@pytest.mark.parametrize("query", ["team=%C2%B2", "user=1x", "team=99999999999999999999999", "model=a%00b"])
def test_malformed_filters_are_a_400_never_a_500(master, alpha, query):
    response = master.get(f"/api/v1/keys/?{query}")
    assert response.status_code == 400, response.content
    body = response.json()
    # The filter's own field names the problem; a NUL byte is refused earlier, for every route, by name.
    assert set(body) & {"team", "user", "model"} or "NUL" in body.get("detail", ""), body


@pytest.mark.parametrize(
    "path",
    ["/api/v1/teams/?organization=%C2%B2", "/api/v1/members/?team=%C2%B2", "/api/v1/deployments/?model_name=a%00"],
)
def test_malformed_filters_on_other_lists_are_a_400(master, path):
    assert master.get(path).status_code == 400


def test_alice_turns_on_the_budget_clamp_of_her_key(alices_key, alice):
    client = client_for(alice)
    assert client.get(f"/api/v1/keys/{alices_key.pk}/").json()["budget_clamp_max_tokens"] is False
    response = client.patch(f"/api/v1/keys/{alices_key.pk}/", {"budget_clamp_max_tokens": True}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["budget_clamp_max_tokens"] is True
    alices_key.refresh_from_db()
    assert alices_key.budget_clamp_max_tokens is True
    bad = client.patch(f"/api/v1/keys/{alices_key.pk}/", {"budget_clamp_max_tokens": "often"}, format="json")
    assert bad.status_code == 400 and "budget_clamp_max_tokens" in bad.json()


def test_a_duplicate_alias_in_one_team_is_a_400(alpha, omega, alice, alices_key, master):
    client = client_for(alice)
    response = client.post("/api/v1/keys/", {"team": alpha.pk, "alias": "alice-key"}, format="json")
    assert response.status_code == 400 and "already has this alias" in str(response.json().get("alias"))
    other = client.post("/api/v1/keys/", {"team": alpha.pk, "alias": "other"}, format="json").json()
    response = client.patch(f"/api/v1/keys/{other['id']}/", {"alias": "alice-key"}, format="json")
    assert response.status_code == 400 and "alias" in response.json()
    assert master.post("/api/v1/keys/", {"team": omega.pk, "alias": "alice-key"}, format="json").status_code == 201
    assert VirtualKey.objects.filter(team=alpha, alias="alice-key").count() == 1
