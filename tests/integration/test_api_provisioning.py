"""The provisioning contract over real HTTP: uvicorn + Postgres + Redis, the master key from the environment.

An operator provisions a tenant with ``GATEWAY_MASTER_KEY``, hands its admin an API token, the admin
creates a key (secret once), the key answers on /v1, and a revoke through the API shuts it out.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request

import pytest
from django.conf import settings
from django.db import connection

from apps.keys.hashing import keyed_hash
from apps.keys.models import ApiToken, VirtualKey
from apps.proxy.models import ModelDeployment
from tests.support.processes import ServerProcess, child_env, free_port, uvicorn_command

pytestmark = [pytest.mark.integration]

UPSTREAM_SECRET = "sk-upstream-" + secrets.token_hex(8)


@pytest.fixture
def server(transactional_db, tmp_path):
    if not settings.REDIS_URL or connection.vendor != "postgresql":
        pytest.skip("needs the real Postgres and Redis from scripts/test.sh")
    master_key = "sk-master-" + secrets.token_hex(16)
    port = free_port()
    env = child_env(GATEWAY_MASTER_KEY=master_key, GATEWAY_RUN_DIR=str(tmp_path / "run"))
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    command = uvicorn_command(port, 1, access_log=True)
    with ServerProcess(command, env=env, ready_url=f"{base}/health/live", log_path=log_path, start_timeout=30):
        yield {"base": base, "master_key": master_key, "log": log_path}


def call(base: str, method: str, path: str, bearer: str | None = None, body=None, raw: bytes | None = None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if bearer:
        request.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        text = error.read().decode()
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, text


def test_provision_a_tenant_and_use_its_key(server):
    base, master = server["base"], server["master_key"]

    assert call(base, "GET", "/api/v1/keys/")[0] == 401
    assert call(base, "GET", "/api/v1/keys/", bearer="sk-master-wrong")[0] == 401
    assert call(base, "POST", "/api/v1/organizations/", master, raw=b"{broken")[0] == 400

    status, org = call(base, "POST", "/api/v1/organizations/", master, {"name": "Initech", "max_budget": "100"})
    assert status == 201, org
    status, other = call(base, "POST", "/api/v1/organizations/", master, {"name": "Umbrella"})
    assert status == 201
    status, team = call(
        base, "POST", "/api/v1/teams/", master, {"organization": org["id"], "name": "Core", "rpm_limit": 50}
    )
    assert status == 201, team
    status, peter = call(
        base, "POST", "/api/v1/users/", master, {"username": "peter", "team": team["id"], "role": "admin"}
    )
    assert status == 201, peter
    status, deployment = call(
        base,
        "POST",
        "/api/v1/deployments/",
        master,
        {"model_name": "int-mock", "provider": "mock", "model": "mock-gpt", "api_key": UPSTREAM_SECRET},
    )
    assert status == 201 and deployment["credentials"] == "set" and "api_key" not in deployment
    assert ModelDeployment.objects.get(pk=deployment["id"]).get_credentials() == UPSTREAM_SECRET

    # peter's API token: shown once, stored hashed, acting with peter's rights only.
    status, token = call(base, "POST", "/api/v1/tokens/", master, {"name": "peter-ci", "user": peter["id"]})
    assert status == 201
    assert ApiToken.objects.get(pk=token["id"]).token_hash == keyed_hash(token["token"])
    status, teams = call(base, "GET", "/api/v1/teams/", token["token"])
    assert status == 200 and [t["name"] for t in teams["results"]] == ["Core"]
    assert call(base, "GET", f"/api/v1/organizations/{other['id']}/", token["token"])[0] == 404
    assert call(base, "POST", "/api/v1/organizations/", token["token"], {"name": "Mine"})[0] == 403

    status, error = call(base, "POST", "/api/v1/keys/", token["token"], {"team": team["id"], "rpm_limit": 51})
    assert status == 400 and "rpm_limit" in error
    status, key = call(
        base, "POST", "/api/v1/keys/", token["token"], {"team": team["id"], "alias": "app", "rpm_limit": 5}
    )
    assert status == 201 and key["key"].startswith("sk-")
    assert VirtualKey.objects.get(pk=key["id"]).key_hash == keyed_hash(key["key"])
    status, detail = call(base, "GET", f"/api/v1/keys/{key['id']}/", token["token"])
    assert status == 200 and "key" not in detail

    chat = {"model": "int-mock", "messages": [{"role": "user", "content": "hello"}]}
    status, answer = call(base, "POST", "/v1/chat/completions", key["key"], chat)
    assert status == 200, answer

    assert call(base, "POST", f"/api/v1/keys/{key['id']}/revoke/", token["token"])[0] == 200
    deadline = time.monotonic() + 5
    while call(base, "POST", "/v1/chat/completions", key["key"], chat)[0] != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.1)

    server_log = server["log"].read_text(errors="replace")
    assert "Traceback" not in server_log, server_log[-3000:]
    for secret in (UPSTREAM_SECRET, key["key"], token["token"], master):
        assert secret not in server_log
