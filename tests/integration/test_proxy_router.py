"""Router, caches and request lifecycle against a real gateway process and a failing mock upstream.

Retries and fallbacks, cooldown honouring Retry-After, upstream error mapping (429 keeps retry-after,
bad JSON 502, timeout 504, never 500), revocation visible within 2 s, and a client disconnect mid-stream
still finishing the request (spend event with what was sent, concurrency slot released).
"""

from __future__ import annotations

import socket
import time
import uuid

import orjson
import pytest
from django.conf import settings

from apps.keys.services import key_revoke
from apps.proxy.models import ModelGroup
from apps.teams.audit import Actor
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import deploy, http, make_key, spend_event

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _needs_redis():
    if not settings.REDIS_URL:
        pytest.skip("needs the Redis started by scripts/test.sh")


def _name() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def chat(gateway, key: str, model: str, **extra):
    return http(
        "POST",
        gateway.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hello"}], **extra},
    )


def hits(upstream, model: str) -> int:
    return sum(1 for r in upstream.requests if r["body"].get("model") == model)


def test_a_deployment_whose_upstream_says_404_is_failed_over_like_a_5xx(gateway, upstream, tenant):
    """A 404 on a model call means this deployment's upstream model id or path is wrong (the public name was
    found in the gateway's registry): the client is served by a healthy deployment, not told "not found"."""
    name = _name()
    broken, healthy = deploy(
        gateway,
        {"model_name": name, "provider": "openai", "model": "not-found", "api_base": upstream.url, "priority": 0},
        {"model_name": name, "provider": "openai", "model": "ok-model", "api_base": upstream.url, "priority": 1},
    )
    response = chat(gateway, tenant.alice_key.secret, name)
    assert response.status_code == 200, response.text
    event = spend_event(response.headers["x-request-id"])
    assert [(a["deployment_id"], a["status"]) for a in event["metadata"]["attempts"]] == [
        (broken.pk, 404),
        (healthy.pk, 200),
    ]
    # With nowhere else to go, the upstream's 404 still reaches the client as it was.
    alone = _name()
    deploy(gateway, {"model_name": alone, "provider": "openai", "model": "not-found", "api_base": upstream.url})
    response = chat(gateway, tenant.alice_key.secret, alone)
    assert response.status_code == 404 and "does not exist" in response.json()["error"]["message"]


def test_retry_moves_to_the_next_deployment_and_records_attempts(gateway, upstream, tenant):
    name = _name()
    failing, healthy = deploy(
        gateway,
        {"model_name": name, "provider": "openai", "model": "fail-500", "api_base": upstream.url, "priority": 0},
        {"model_name": name, "provider": "openai", "model": "ok-model", "api_base": upstream.url, "priority": 1},
    )
    response = chat(gateway, tenant.alice_key.secret, name)
    assert response.status_code == 200
    assert response.headers["x-gateway-deployment"] == f"{healthy.pk}:openai/ok-model"
    event = spend_event(response.headers["x-request-id"])
    assert [a["deployment_id"] for a in event["metadata"]["attempts"]] == [failing.pk, healthy.pk]
    assert event["deployment_id"] == healthy.pk and event["status"] == 200


def test_fallback_model_when_the_whole_group_fails(gateway, upstream, tenant):
    primary, backup = _name(), _name()
    deploy(
        gateway,
        {"model_name": primary, "provider": "openai", "model": "fail-500", "api_base": upstream.url},
        {"model_name": backup, "provider": "openai", "model": "backup-up", "api_base": upstream.url},
    )
    ModelGroup.objects.create(model_name=primary, fallbacks=[backup], num_retries=0)
    from apps.common.invalidation import publish_invalidation

    publish_invalidation("group")
    time.sleep(1.2)
    response = chat(gateway, tenant.alice_key.secret, primary)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "backup-up"


def test_repeated_failures_cool_the_deployment_down(gateway, upstream, tenant):
    name = _name()
    deploy(
        gateway,
        {
            "model_name": name,
            "provider": "openai",
            "model": "fail-500",
            "api_base": upstream.url,
            "extra": {"cooldown_seconds": 30},
        },
    )
    before = hits(upstream, "fail-500")
    first = chat(gateway, tenant.alice_key.secret, name)
    assert first.status_code == 502
    assert first.json()["error"]["llm_provider"] == "openai"
    assert hits(upstream, "fail-500") - before == 3  # one try + PROXY_NUM_RETRIES=2
    second = chat(gateway, tenant.alice_key.secret, name)
    assert second.status_code == 503
    assert int(second.headers["retry-after"]) >= 1
    assert hits(upstream, "fail-500") - before == 3  # cooling down: not called again


def test_upstream_429_keeps_retry_after_and_provider_tag(gateway, upstream, tenant):
    name = _name()
    deploy(gateway, {"model_name": name, "provider": "openai", "model": "fail-429", "api_base": upstream.url})
    before = hits(upstream, "fail-429")
    response = chat(gateway, tenant.alice_key.secret, name)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    error = response.json()["error"]
    assert error["llm_provider"] == "openai" and error["type"] == "rate_limit_error"
    assert hits(upstream, "fail-429") - before == 1  # Retry-After honoured: no hammering


@pytest.mark.parametrize(
    ("upstream_model", "status", "extra"),
    [("bad-json", 502, {}), ("slow", 504, {"timeout_seconds": 0.3}), ("auth-fail", 502, {}), ("bad-request", 400, {})],
)
def test_upstream_faults_map_to_clear_statuses(gateway, upstream, tenant, upstream_model, status, extra):
    name = _name()
    deploy(
        gateway, {"model_name": name, "provider": "openai", "model": upstream_model, "api_base": upstream.url, **extra}
    )
    response = chat(gateway, tenant.alice_key.secret, name)
    assert response.status_code == status, response.text
    assert response.json()["error"]["llm_provider"] == "openai"
    assert response.headers["x-request-id"]
    assert "sk-proj" not in response.text  # an upstream echoing its credentials never reaches the client


def test_a_fallback_model_the_key_may_not_use_is_never_tried(gateway, upstream, tenant):
    primary, backup = _name(), _name()
    deploy(
        gateway,
        {"model_name": primary, "provider": "openai", "model": "fail-500", "api_base": upstream.url},
        {"model_name": backup, "provider": "openai", "model": "backup-forbidden", "api_base": upstream.url},
    )
    ModelGroup.objects.create(model_name=primary, fallbacks=[backup], num_retries=0)
    limited = make_key(tenant.alpha, tenant.alice, allowed_models=[primary])
    from apps.common.invalidation import publish_invalidation

    publish_invalidation("group")
    time.sleep(1.2)
    response = chat(gateway, limited.secret, primary)
    assert response.status_code == 502, response.text
    assert hits(upstream, "backup-forbidden") == 0


def test_a_deactivated_users_keys_stop_working(gateway, upstream, tenant):
    from apps.teams.services import user_update

    name = _name()
    deploy(gateway, {"model_name": name, "provider": "openai", "model": "ok-model", "api_base": upstream.url})
    key = make_key(tenant.alpha, tenant.alice)
    assert chat(gateway, key.secret, name).status_code == 200
    from tests.factories import UserFactory

    root = UserFactory(username="root", is_superuser=True)
    user_update(actor=Actor(root), user=tenant.alice, is_active=False)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline and chat(gateway, key.secret, name).status_code == 200:
        time.sleep(0.1)
    response = chat(gateway, key.secret, name)
    assert response.status_code == 401, response.text


def test_lowest_cost_strategy_picks_the_cheaper_deployment(gateway, upstream, tenant):
    name = _name()
    _expensive, cheap = deploy(
        gateway,
        {
            "model_name": name,
            "provider": "openai",
            "model": "pricey",
            "api_base": upstream.url,
            "input_cost_per_token": "0.001",
            "output_cost_per_token": "0.001",
        },
        {
            "model_name": name,
            "provider": "openai",
            "model": "cheap",
            "api_base": upstream.url,
            "input_cost_per_token": "0.0000001",
            "output_cost_per_token": "0.0000001",
        },
    )
    ModelGroup.objects.create(model_name=name, strategy="lowest-cost")
    from apps.common.invalidation import publish_invalidation

    publish_invalidation("group")
    time.sleep(1.2)
    for _ in range(5):
        response = chat(gateway, tenant.alice_key.secret, name)
        assert response.headers["x-gateway-deployment"] == f"{cheap.pk}:openai/cheap"


def test_revocation_is_visible_within_two_seconds(gateway, upstream, tenant):
    name = _name()
    deploy(gateway, {"model_name": name, "provider": "openai", "model": "ok", "api_base": upstream.url})
    key = make_key(tenant.alpha, tenant.alice)
    assert chat(gateway, key.secret, name).status_code == 200  # now cached in the worker
    key_revoke(actor=Actor(user=tenant.alice, source="api"), key=key)
    time.sleep(2.0)  # the promise: within 2 s (the auth cache TTL is 30 s)
    assert chat(gateway, key.secret, name).status_code == 401


def _start_stream(gateway, key: str, model: str) -> tuple[socket.socket, bytes]:
    body = orjson.dumps({"model": model, "stream": True, "messages": [{"role": "user", "content": "go"}]})
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while received.count(b"data:") < 4:
        received += sock.recv(65536)
    return sock, received


def test_client_disconnect_mid_stream_still_finishes_the_request(gateway, upstream, tenant):
    name = _name()
    deploy(
        gateway,
        {
            "model_name": name,
            "provider": "openai",
            "model": "drip",
            "api_base": upstream.url,
            "input_cost_per_token": "0.000001",
            "output_cost_per_token": "0.000001",
        },
    )
    key = make_key(tenant.alpha, tenant.alice, max_parallel_requests=1)
    sock, received = _start_stream(gateway, key.secret, name)
    head = received.split(b"\r\n\r\n", 1)[0].decode()
    request_id = next(line.split(": ", 1)[1] for line in head.split("\r\n") if line.lower().startswith("x-request-id"))
    held = chat(gateway, key.secret, name)  # the stream holds the key's only slot
    assert held.status_code == 429 and held.json()["error"]["limit_type"] == "concurrent_requests"
    sock.close()
    event = spend_event(request_id)
    assert event["status"] == 499 and event["error_type"] == "client_disconnect"
    assert event["completion_tokens"] > 0  # billed for what was sent
    assert event["prompt_tokens"] > 0 and float(event["cost"]) > 0
    # post_call ran: the key's single concurrency slot is free again (a held slot would answer 429).
    deadline = time.monotonic() + 3
    while (status := chat(gateway, key.secret, name).status_code) != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 200


def test_upstream_dying_mid_stream_ends_the_stream_with_an_error_event(gateway, upstream, tenant):
    import openai
    from openai import OpenAI

    name = _name()
    deploy(gateway, {"model_name": name, "provider": "openai", "model": "break-stream", "api_base": upstream.url})
    client = OpenAI(base_url=gateway.v1, api_key=tenant.alice_key.secret, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=name, messages=[{"role": "user", "content": "one two"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError):
        for chunk in raw.parse():
            received.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == "echo: one two"
    event = spend_event(raw.headers["x-request-id"])
    assert event["status"] == 502 and event["error_type"] == "upstream_connection"
    assert event["completion_tokens"] > 0  # what was relayed is billed


def test_revocation_reaches_every_worker_within_two_seconds(upstream, tenant, django_db_blocker):
    from tests.support.gateway import GatewayServer

    with GatewayServer(workers=2) as two:
        name = _name()
        deploy(two, {"model_name": name, "provider": "openai", "model": "ok", "api_base": upstream.url})
        key = make_key(tenant.alpha, tenant.alice)
        for _ in range(20):  # new connections spread over both workers: each caches the key
            assert chat(two, key.secret, name).status_code == 200
        key_revoke(actor=Actor(user=tenant.alice, source="api"), key=key)
        time.sleep(2.0)  # the promise: within 2 s (the auth cache TTL is 30 s)
        statuses = {chat(two, key.secret, name).status_code for _ in range(20)}
        assert statuses == {401}, statuses
