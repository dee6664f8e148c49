"""``/v1/realtime`` through the openai SDK's realtime client (and a raw WebSocket client where the SDK hides
what is checked: subprotocols, close codes), against a local upstream speaking the realtime protocol.

Alice's key talks to a model on ``RealtimeUpstream``; the gateway holds the upstream's key.
"""

from __future__ import annotations

import time
from decimal import Decimal

import orjson
import pytest
import redis
from django.conf import settings
from openai import OpenAI
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from apps.guardrails.services import guardrail_policy_set
from apps.teams.audit import Actor
from tests.factories import UserFactory
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import MASTER_KEY, GatewayServer, deploy, http, make_key, unique_name
from tests.support.realtime_upstream import RealtimeUpstream

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

UPSTREAM_KEY = "sk-upstream-realtime-secret-0123"
PRICES = {
    "input_cost_per_token": "0.000004",
    "output_cost_per_token": "0.000016",
    "cached_input_cost_per_token": "0.0000004",
    "extra": {"audio_input_cost_per_token": "0.000032", "audio_output_cost_per_token": "0.000064"},
}
# The mock's USAGE at PRICES: 20 text in, 60 uncached + 40 cached audio in, 10 text out, 40 audio out.
EXPECTED_COST = Decimal("0.000004") * 20 + Decimal("0.000032") * 60 + Decimal("0.0000004") * 40
EXPECTED_COST += Decimal("0.000016") * 10 + Decimal("0.000064") * 40


@pytest.fixture(scope="module")
def realtime_upstream():
    with RealtimeUpstream() as server:
        yield server


def realtime_model(gateway, upstream, model: str = "gpt-realtime-up", provider: str = "openai") -> str:
    name = unique_name("rt")
    spec = {"model_name": name, "provider": provider, "model": model, "api_key": UPSTREAM_KEY, **PRICES}
    spec["api_base"] = upstream.url if provider == "openai" else upstream.base + "/azure"
    deploy(gateway, spec)
    return name


def ws_url(gateway, name: str) -> str:
    return gateway.url.replace("http://", "ws://") + f"/v1/realtime?model={name}"


def ledger_rows(model: str, count: int, timeout: float = 10.0) -> list[dict]:
    """The spend events of ``model`` (oldest first) once there are ``count`` of them."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = [orjson.loads(f[b"e"]) for _id, f in client.xrevrange("gateway:spend", count=2000)]
        rows = [r for r in reversed(rows) if r["model"] == model]
        if len(rows) >= count:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"{len(rows)} spend events for {model}, expected {count}: {rows}")


def events_until(conn, kind: str) -> list:
    seen = []
    for event in conn:
        seen.append(event)
        if event.type == kind or event.type == "error":
            return seen
    raise AssertionError(f"the session closed before {kind}: {[e.type for e in seen]}")


def test_a_session_round_trip_bills_each_response_in_the_ledger(gateway, realtime_upstream, tenant):
    name = realtime_model(gateway, realtime_upstream)
    client = OpenAI(base_url=gateway.v1, api_key=tenant.alice_key.secret, max_retries=0)
    with client.realtime.connect(model=name) as conn:
        assert events_until(conn, "session.created")[-1].type == "session.created"
        for _ in range(2):
            conn.response.create()
            seen = events_until(conn, "response.done")
            text = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
            assert text == "Hello from realtime"
            assert seen[-1].response.usage.output_tokens == 50
    first, second = ledger_rows(name, 2)
    for row in (first, second):
        assert row["route"] == "/v1/realtime" and row["status"] == 200
        assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (120, 50, 40)
        assert Decimal(row["cost"]) == EXPECTED_COST
        assert row["metadata"]["input_audio_tokens"] == 100 and row["metadata"]["output_audio_tokens"] == 40
        assert row["key_id"] == tenant.alice_key.pk
    assert first["metadata"]["realtime_session"] == second["metadata"]["realtime_session"]
    assert first["request_id"] != second["request_id"]
    # Upstream, the gateway's key and the deployment's model id; never the client's key.
    handshake = realtime_upstream.handshakes[-1]
    assert handshake["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert handshake["path"] == "/v1/realtime?model=gpt-realtime-up"
    assert tenant.alice_key.secret not in orjson.dumps(handshake).decode()


def test_a_response_the_upstream_starts_itself_is_billed_too(gateway, realtime_upstream, tenant):
    name = realtime_model(gateway, realtime_upstream)
    client = OpenAI(base_url=gateway.v1, api_key=tenant.alice_key.secret, max_retries=0)
    with client.realtime.connect(model=name) as conn:
        events_until(conn, "session.created")
        conn.input_audio_buffer.commit()  # the mock answers it as turn detection would
        assert events_until(conn, "response.done")[-1].type == "response.done"
    (row,) = ledger_rows(name, 1)
    assert row["status"] == 200 and Decimal(row["cost"]) == EXPECTED_COST


def test_azure_realtime_deployment_gets_its_own_url_and_api_key_header(gateway, realtime_upstream, tenant):
    name = realtime_model(gateway, realtime_upstream, model="my-rt-dep", provider="azure")
    client = OpenAI(base_url=gateway.v1, api_key=tenant.alice_key.secret, max_retries=0)
    with client.realtime.connect(model=name) as conn:
        events_until(conn, "session.created")
        conn.response.create()
        events_until(conn, "response.done")
    handshake = realtime_upstream.handshakes[-1]
    assert handshake["path"].startswith("/azure/openai/realtime?api-version=")
    assert "deployment=my-rt-dep" in handshake["path"]
    assert handshake["headers"]["api-key"] == UPSTREAM_KEY and "authorization" not in handshake["headers"]


def test_browser_subprotocol_authenticates_and_only_realtime_is_echoed(gateway, realtime_upstream, tenant):
    name = realtime_model(gateway, realtime_upstream)
    protocols = ["realtime", f"openai-insecure-api-key.{tenant.alice_key.secret}"]
    with connect(ws_url(gateway, name), subprotocols=protocols, open_timeout=20) as ws:
        assert ws.subprotocol == "realtime"
        assert ws.response.headers["x-request-id"].startswith("req_")
        assert orjson.loads(ws.recv(timeout=20))["type"] == "session.created"
    assert tenant.alice_key.secret not in orjson.dumps(realtime_upstream.handshakes[-1]).decode()


def refusal(url: str, **kwargs) -> tuple[int, dict]:
    with pytest.raises(InvalidStatus) as refused:
        connect(url, open_timeout=20, **kwargs)
    response = refused.value.response
    return response.status_code, orjson.loads(response.body)


def test_refusals_before_the_upgrade_are_http_answers(gateway, realtime_upstream, tenant):
    name = realtime_model(gateway, realtime_upstream)
    secret = tenant.alice_key.secret
    auth = {"additional_headers": {"Authorization": f"Bearer {secret}"}}
    assert refusal(ws_url(gateway, name))[0] == 401
    assert refusal(ws_url(gateway, "no-such-model"), **auth)[0] == 404
    status, body = refusal(gateway.url.replace("http://", "ws://") + "/v1/realtime", **auth)
    assert status == 400 and body["error"]["param"] == "model"
    limited = make_key(tenant.alpha, tenant.alice, allowed_models=["some-other-model"])
    status, body = refusal(ws_url(gateway, name), additional_headers={"Authorization": f"Bearer {limited.secret}"})
    assert status == 403 and body["error"]["code"] == "model_not_allowed"
    # A key revoked while the gateway has it cached is refused at the next connect.
    with connect(ws_url(gateway, name), open_timeout=20, **auth) as ws:
        ws.recv(timeout=20)
    revoked = http(
        "POST",
        f"{gateway.url}/api/v1/keys/{tenant.alice_key.pk}/revoke/",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert revoked.status_code == 200, revoked.text
    deadline = time.monotonic() + 10
    while not _refused(gateway, name, auth):
        assert time.monotonic() < deadline, "the revoked key still connects"
        time.sleep(0.2)
    assert refusal(ws_url(gateway, name), **auth)[0] == 401


def test_a_key_with_a_guardrail_policy_is_refused_before_the_upgrade(gateway, realtime_upstream, tenant):
    name = realtime_model(gateway, realtime_upstream)
    operator = Actor(user=UserFactory(username=unique_name("op"), is_staff=True, is_superuser=True), source="api")
    guarded = make_key(tenant.alpha, alias=unique_name("guarded"))
    guardrail_policy_set(actor=operator, key=guarded, config={"pii": {"entities": {"email": "mask"}}})
    before = len(realtime_upstream.handshakes)
    status, body = refusal(ws_url(gateway, name), additional_headers={"Authorization": f"Bearer {guarded.secret}"})
    assert status == 403 and body["error"]["code"] == "guardrails_unsupported"
    assert len(realtime_upstream.handshakes) == before


def _refused(gateway, name: str, auth: dict) -> bool:
    try:
        with connect(ws_url(gateway, name), open_timeout=20, **auth):
            return False
    except InvalidStatus:
        return True


def test_rpm_counts_the_session_and_each_response(gateway, realtime_upstream, tenant):
    name = realtime_model(gateway, realtime_upstream)
    key = make_key(tenant.alpha, tenant.alice, rpm_limit=2)
    client = OpenAI(base_url=gateway.v1, api_key=key.secret, max_retries=0)
    with client.realtime.connect(model=name) as conn:
        events_until(conn, "session.created")
        conn.response.create(event_id="evt_first")  # the session was request 1, this is 2
        assert events_until(conn, "response.done")[-1].type == "response.done"
        conn.response.create(event_id="evt_second")  # a third: refused, never sent upstream
        error = events_until(conn, "error")[-1].error
        assert error.code == "rate_limit_exceeded" and error.event_id == "evt_second"
        extra = error.model_extra or {}
        assert extra["limit_type"] == "requests" and extra["scope"] == "key" and extra["retry_after"] > 0
    assert not any(e.get("event_id") == "evt_second" for e in realtime_upstream.events)
    # A new session is refused before the upgrade, with the 429's headers and body.
    status, body = refusal(ws_url(gateway, name), additional_headers={"Authorization": f"Bearer {key.secret}"})
    assert status == 429 and body["error"]["limit_type"] == "requests" and body["error"]["llm_provider"] == "openai"
    rows = ledger_rows(name, 3)
    assert sorted(r["status"] for r in rows) == [200, 429, 429]


def test_a_session_holds_one_parallel_slot_and_its_responses_take_none(gateway, realtime_upstream, tenant):
    name = realtime_model(gateway, realtime_upstream)
    key = make_key(tenant.alpha, tenant.alice, max_parallel_requests=1)
    auth = {"additional_headers": {"Authorization": f"Bearer {key.secret}"}}
    client = OpenAI(base_url=gateway.v1, api_key=key.secret, max_retries=0)
    with client.realtime.connect(model=name) as conn:
        events_until(conn, "session.created")
        conn.response.create()
        assert events_until(conn, "response.done")[-1].type == "response.done"
        status, body = refusal(ws_url(gateway, name), **auth)
        assert status == 429 and body["error"]["limit_type"] == "concurrent_requests"
    # The slot is back once the session closed.
    deadline = time.monotonic() + 10
    while _refused(gateway, name, auth):
        assert time.monotonic() < deadline, "the session's slot was never released"
        time.sleep(0.2)


def test_upstream_error_text_never_carries_the_upstream_key(gateway, realtime_upstream, tenant):
    name = realtime_model(gateway, realtime_upstream, model="leak-key")
    client = OpenAI(base_url=gateway.v1, api_key=tenant.alice_key.secret, max_retries=0)
    with client.realtime.connect(model=name) as conn:
        events_until(conn, "session.created")
        conn.response.create(event_id="evt_leak")
        error = events_until(conn, "error")[-1].error
    assert error.message.startswith("Incorrect API key provided")
    assert UPSTREAM_KEY not in error.message and "upstream-realtime" not in error.message
    (row,) = ledger_rows(name, 1)
    assert row["status"] == 400 and Decimal(row["cost"]) == 0  # the reservation given back


def test_the_session_cap_closes_with_a_clear_code_and_bills_open_responses(realtime_upstream, tenant):
    with GatewayServer(PROXY_REALTIME_MAX_SESSION_SECONDS="3") as capped:
        name = realtime_model(capped, realtime_upstream, model="never-done")
        headers = {"Authorization": f"Bearer {tenant.alice_key.secret}"}
        with connect(ws_url(capped, name), additional_headers=headers, open_timeout=20) as ws:
            ws.send(orjson.dumps({"type": "response.create"}).decode())
            events = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    events.append(orjson.loads(ws.recv(timeout=30)))
        assert closed.value.rcvd.code == 1008 and closed.value.rcvd.reason == "session length limit reached"
        assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "session_expired"
        (row,) = ledger_rows(name, 1)
        # No usage ever came: billed for the text it sent ("Hello from realtime": 19 characters, 5 tokens).
        assert row["status"] == 499 and row["completion_tokens"] == 5 and row["error_type"] == "session_closed"
