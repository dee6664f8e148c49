"""LiteLLM's management routes on the gateway: LiteLLM's field names, the gateway's services and tenant rules.

A provisioning script written for LiteLLM (``POST /key/generate`` with ``key_alias``, ``models``,
``max_budget``...) runs unchanged against the gateway, with the master key or an API token, and sees
exactly what ``/api/v1/`` would let it see.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.keys.hashing import keyed_hash
from apps.keys.models import VirtualKey
from apps.proxy.models import ModelDeployment
from apps.teams.models import AuditEvent, Customer, Membership, ModelAccessGroup, Team
from tests.factories import VirtualKeyFactory
from tests.support.api import client_for

pytestmark = pytest.mark.django_db


def test_key_generate_takes_litellms_fields_and_returns_the_secret_once(master, alpha):
    response = master.post(
        "/key/generate",
        {
            "team_id": str(alpha.pk),
            "key_alias": "ci-pipeline",
            "models": ["gpt-4o"],
            "max_budget": 10.5,
            "budget_duration": "30d",
            "tpm_limit": 1000,
            "rpm_limit": 60,
            "max_parallel_requests": 4,
            "metadata": {"owner": "ci"},
            "duration": "7d",
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["key"].startswith("sk-") and body["key_alias"] == "ci-pipeline"
    assert (body["models"], body["max_budget"], body["budget_duration"]) == (["gpt-4o"], 10.5, "30d")
    assert (body["tpm_limit"], body["rpm_limit"], body["max_parallel_requests"]) == (1000, 60, 4)
    assert body["team_id"] == str(alpha.pk) and body["metadata"] == {"owner": "ci"} and body["expires"]
    key = VirtualKey.objects.get(pk=int(body["token"]))
    assert key.key_hash == keyed_hash(body["key"]) and key.max_budget == Decimal("10.5")
    assert AuditEvent.objects.filter(action="key.create", object_id=str(key.pk)).exists()
    info = master.get("/key/info", {"key": body["key"]}).json()
    assert info["key"] == body["token"] and "key" not in info["info"]  # the secret never comes back


def test_key_update_regenerate_and_delete_by_secret_or_token(master, alpha):
    created = master.post("/key/generate", {"team_id": alpha.pk, "key_alias": "k"}, format="json").json()

    updated = master.post("/key/update", {"key": created["key"], "rpm_limit": 5}, format="json")
    assert updated.status_code == 200 and updated.json()["rpm_limit"] == 5

    regenerated = master.post("/key/regenerate", {"key": created["token"]}, format="json").json()
    assert regenerated["key"] != created["key"] and regenerated["token"] == created["token"]
    assert master.get("/key/info", {"key": created["key"]}).status_code == 404  # the old secret is gone

    deleted = master.post("/key/delete", {"keys": [regenerated["key"]]}, format="json")
    assert deleted.status_code == 200 and deleted.json() == {"deleted_keys": [regenerated["key"]]}
    assert VirtualKey.objects.get(pk=int(created["token"])).status == "revoked"
    assert master.get("/key/list").json()["keys"] == []


def error(response) -> dict:
    """LiteLLM's error body: {"error": {"message", "type", "param", "code"}}, code the status as text."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["code"] == str(response.status_code)
    return body["error"]


def test_errors_come_in_litellms_body_with_the_gateways_statuses(master, client, alpha, alice, charlie):
    bad = master.post("/key/generate", {"team_id": alpha.pk, "max_budget": "lots"}, format="json")
    assert bad.status_code == 400
    assert error(bad) == {
        "message": "max_budget: must be a number.",
        "type": "bad_request_error",
        "param": "max_budget",
        "code": "400",
    }
    missing = client_for(charlie).get("/team/info", {"team_id": alpha.pk})
    assert missing.status_code == 404 and error(missing)["type"] == "not_found_error"
    assert error(missing)["message"] == f"team {alpha.pk} not found." and error(missing)["param"] is None
    denied = client_for(alice).post("/team/update", {"team_id": alpha.pk, "max_budget": 1000}, format="json")
    assert denied.status_code == 403 and error(denied)["type"] == "auth_error"
    anonymous = client.post("/key/generate", {"team_id": alpha.pk}, content_type="application/json")
    assert anonymous.status_code in (401, 403) and error(anonymous)["type"] == "auth_error"
    not_json = master.post("/key/generate", "[1, 2]", content_type="application/json")
    assert not_json.status_code == 400 and error(not_json)["param"] is None
    assert "JSON object" in error(not_json)["message"]


def test_fields_the_gateway_has_no_place_for_are_refused_by_name(master, alpha):
    response = master.post("/key/generate", {"team_id": alpha.pk, "permissions": {"x": 1}}, format="json")
    assert response.status_code == 400 and error(response)["param"] == "permissions"

    response = master.post("/key/generate", {"key_alias": "no team"}, format="json")
    assert response.status_code == 400 and error(response)["param"] == "team_id"


def test_the_same_tenant_rules_as_the_rest_api(alpha, omega, alice, charlie):
    """charlie (Omega's admin) can neither see nor use Acme's team or keys through these routes."""
    alice_key = VirtualKeyFactory(team=alpha, user=alice)
    as_charlie = client_for(charlie)

    assert as_charlie.post("/key/generate", {"team_id": alpha.pk}, format="json").status_code == 404
    assert as_charlie.get("/key/info", {"key": alice_key.secret}).status_code == 404
    assert as_charlie.post("/key/delete", {"keys": [str(alice_key.pk)]}, format="json").status_code == 404
    assert [t["team_alias"] for t in as_charlie.get("/team/list").json()] == ["Omega"]
    assert as_charlie.get("/key/list").json()["total_count"] == 0
    assert VirtualKey.objects.get(pk=alice_key.pk).status == "active"

    as_alice = client_for(alice)
    assert as_alice.post("/key/generate", {"team_id": alpha.pk, "key_alias": "mine"}, format="json").status_code == 200
    # A team admin can't raise their own team's ceiling: the service says 403, as on /api/v1/.
    assert as_alice.post("/team/update", {"team_id": alpha.pk, "max_budget": 1000}, format="json").status_code == 403


def test_unauthenticated_calls_are_refused(client, alpha):
    assert client.post("/key/generate", {"team_id": alpha.pk}, content_type="application/json").status_code in (
        401,
        403,
    )
    assert client.get("/team/list").status_code in (401, 403)


def test_teams_members_users_and_customers(master, acme, globex, olga):
    team = master.post(
        "/team/new",
        {"team_alias": "ml", "organization_id": str(acme.pk), "max_budget": 50, "models": ["gpt-4o"]},
        format="json",
    )
    assert team.status_code == 200, team.content
    team_id = team.json()["team_id"]
    assert Team.objects.get(pk=int(team_id)).organization == acme

    user = master.post("/user/new", {"user_email": "dev@example.com", "team_id": team_id}, format="json").json()
    assert user["user_email"] == "dev@example.com" and user["key"].startswith("sk-")
    added = master.post(
        "/team/member_add", {"team_id": team_id, "member": {"user_id": "olga", "role": "admin"}}, format="json"
    )
    assert added.status_code == 200
    roles = {m["user_id"]: m["role"] for m in added.json()["members_with_roles"]}
    assert roles == {user["user_id"]: "user", str(olga.pk): "admin"}
    assert Membership.objects.get(user=olga, team_id=int(team_id)).role == "admin"

    info = master.get("/user/info", {"user_id": user["user_id"]}).json()
    assert [t["team_alias"] for t in info["teams"]] == ["ml"] and len(info["keys"]) == 1
    assert master.get("/team/info", {"team_id": team_id}).json()["team_info"]["max_budget"] == 50

    # Two organizations exist: a team or customer without organization_id is ambiguous, and said so.
    assert error(master.post("/team/new", {"team_alias": "x"}, format="json"))["param"] == "organization_id"
    customer = master.post(
        "/customer/new", {"user_id": "end-user-7", "organization_id": acme.pk, "max_budget": 3}, format="json"
    )
    assert customer.status_code == 200
    assert Customer.objects.get(external_id="end-user-7").max_budget == Decimal(3)

    master.post("/user/info", {}, format="json")  # wrong method: not a 500
    deleted = master.post("/team/delete", {"team_ids": [team_id]}, format="json")
    assert deleted.status_code == 400  # the team has a key: block it instead, as the service says


def test_health_routes_answer_like_litellms(client):
    assert client.get("/health/liveliness").status_code == 200
    ready = client.get("/health/readiness")
    assert ready.status_code == 200 and ready.json()["status"] == "healthy"


WORST = ["", "x" * 5000, -1, 10**30, "١٢", "NaN", "Infinity", "1e999", {"a": 1}, [1, "x"], None, True, "\x00"]
POST_FIELDS = {
    "/key/generate": ["team_id", "user_id", "key_alias", "models", "max_budget", "tpm_limit", "metadata", "duration"],
    "/key/update": ["key", "max_budget", "budget_duration", "models", "duration"],
    "/key/delete": ["keys"],
    "/key/regenerate": ["key"],
    "/team/new": ["team_alias", "organization_id", "models", "max_budget", "members_with_roles", "metadata"],
    "/team/update": ["team_id", "rpm_limit", "blocked"],
    "/team/delete": ["team_ids"],
    "/team/member_add": ["team_id", "member"],
    "/user/new": ["user_id", "user_email", "user_role", "team_id", "max_budget"],
    "/customer/new": ["user_id", "organization_id", "max_budget", "blocked"],
    "/model/new": ["model_name", "litellm_params", "model_info"],
}
GET_PARAMS = {
    "/key/info": ["key"],
    "/key/list": ["team_id", "user_id", "page", "size"],
    "/team/info": ["team_id"],
    "/user/info": ["user_id"],
    "/spend/logs": ["api_key", "user_id", "request_id"],
}


def test_malformed_values_are_never_a_server_error(master, alpha):
    valid = {"team_id": alpha.pk, "key": "1", "keys": ["1"], "team_ids": [alpha.pk], "user_id": "u1"}
    for path, fields in POST_FIELDS.items():
        for name in fields:
            for value in WORST:
                body = {k: v for k, v in valid.items() if k in fields} | {name: value}
                response = master.post(path, body, format="json")
                assert response.status_code < 500, (path, name, value, response.content[:300])
        assert master.post(path, "[1, 2]", content_type="application/json").status_code == 400
    for path, params in GET_PARAMS.items():
        for name in params:
            for value in WORST:
                if isinstance(value, str):
                    response = master.get(path, {name: value})
                    assert response.status_code < 500, (path, name, value, response.content[:300])


def test_model_new_and_model_info_speak_litellms_model_list_shape(master, acme):
    created = master.post(
        "/model/new",
        {
            "model_name": "claude-fast",
            "litellm_params": {"model": "anthropic/claude-3-5-haiku", "api_key": "sk-ant-secret", "rpm": 50},
            "model_info": {"id": "claude-fast-1", "input_cost_per_token": 0.000001},
        },
        format="json",
    )
    assert created.status_code == 200, created.content
    deployment = ModelDeployment.objects.get(name="claude-fast-1")
    assert (deployment.provider, deployment.model, deployment.rpm_limit) == ("anthropic", "claude-3-5-haiku", 50)
    assert deployment.get_credentials() == "sk-ant-secret" and deployment.organization is None

    bedrock = master.post(
        "/model/new",
        {
            "model_name": "titan",
            "litellm_params": {
                "model": "bedrock/amazon.titan-text-express-v1",
                "aws_region_name": "us-east-1",
                "aws_access_key_id": "AKIDEXAMPLE",
                "aws_secret_access_key": "wJalrXUtnFEMI",
            },
            "model_info": {"organization_id": acme.pk},
        },
        format="json",
    )
    assert bedrock.status_code == 200, bedrock.content
    titan = ModelDeployment.objects.get(model_name="titan")
    assert (titan.region, titan.organization, titan.get_credentials()) == (
        "us-east-1",
        acme,
        "AKIDEXAMPLE:wJalrXUtnFEMI",
    )

    refused = master.post(
        "/model/new",
        {"model_name": "x", "litellm_params": {"model": "openai/gpt-4o", "temperature": 0.1, "api_key": "k"}},
        format="json",
    )
    assert refused.status_code == 400 and error(refused)["param"] == "litellm_params.temperature"
    assert not ModelDeployment.objects.filter(model_name="x").exists()

    listed = master.get("/model/info").json()["data"]
    entry = next(m for m in listed if m["model_name"] == "claude-fast")
    assert entry["litellm_params"]["model"] == "anthropic/claude-3-5-haiku" and entry["litellm_params"]["rpm"] == 50
    assert entry["model_info"]["id"] == str(deployment.pk)
    assert "sk-ant-secret" not in str(listed) and "wJalrXUtnFEMI" not in str(listed)


def test_model_new_puts_the_model_in_its_access_groups(master, acme):
    def add(name: str, groups, **info):
        body = {
            "model_name": name,
            "litellm_params": {"model": "openai/gpt-4o", "api_key": "k"},
            "model_info": {"access_groups": groups, **info},
        }
        return master.post("/model/new", body, format="json")

    assert add("gpt-4o", ["beta-models", "gpt-4-family"]).status_code == 200
    assert add("gpt-4o-mini", ["gpt-4-family"]).status_code == 200
    assert add("acme-gpt", ["gpt-4-family"], organization_id=acme.pk).status_code == 200
    shared = {g.name: g.members for g in ModelAccessGroup.objects.filter(organization=None)}
    assert shared == {"beta-models": ["gpt-4o"], "gpt-4-family": ["gpt-4o", "gpt-4o-mini"]}
    assert ModelAccessGroup.objects.get(organization=acme).members == ["acme-gpt"]
    refused = add("bad", "beta-models")
    assert refused.status_code == 400 and error(refused)["param"] == "model_info.access_groups"
    assert not ModelDeployment.objects.filter(model_name="bad").exists()


def test_malformed_litellm_params_are_never_a_server_error(master):
    for name in ("model", "rpm", "tpm", "timeout", "order", "weight", "api_base", "api_version", "api_key"):
        for value in WORST:
            params = {"model": "openai/gpt-4o", name: value}
            response = master.post("/model/new", {"model_name": "m", "litellm_params": params}, format="json")
            assert response.status_code < 500, (name, value, response.content[:300])
    for name in ("input_cost_per_token", "id", "access_groups"):
        for value in WORST:
            body = {"model_name": "m", "litellm_params": {"model": "openai/x"}, "model_info": {name: value}}
            response = master.post("/model/new", body, format="json")
            assert response.status_code < 500, (name, value, response.content[:300])


def test_key_generate_takes_a_key_the_caller_chose(master, client, alpha):
    chosen = "sk-my-own-key-0123456789abcdef"
    created = master.post("/key/generate", {"team_id": alpha.pk, "key": chosen}, format="json")
    assert created.status_code == 200, created.content
    assert created.json()["key"] == chosen
    key = VirtualKey.objects.get(pk=int(created.json()["token"]))
    assert key.key_hash == keyed_hash(chosen) and key.prefix == "sk-my-own-...cdef"  # stored like any key
    info = client.get("/v1/key/info", headers={"Authorization": f"Bearer {chosen}"})
    assert info.status_code == 200 and info.json()["prefix"] == "sk-my-own-...cdef"

    again = master.post("/key/generate", {"team_id": alpha.pk, "key": chosen}, format="json")
    assert again.status_code == 400 and error(again)["param"] == "key" and "already in use" in error(again)["message"]
    for weak in ("sk-1234", "not-an-sk-key-0123456789abc", "sk-with spaces-0123456789abc", "sk-gw-" + "a" * 30, 7):
        refused = master.post("/key/generate", {"team_id": alpha.pk, "key": weak}, format="json")
        assert refused.status_code == 400 and error(refused)["param"] == "key", (weak, refused.content)
    assert VirtualKey.objects.filter(team=alpha).count() == 1
    assert chosen not in str(AuditEvent.objects.filter(action="key.create").values_list("changes", flat=True))
