"""Provider pass-through (``/anthropic/*``, ``/gemini/*``, ``/openai/*``) through a real gateway process to the
mock upstream: the official ``anthropic`` SDK with ``base_url = <gateway>/anthropic``, plain HTTP for Gemini
and OpenAI-native routes. Alice's key, the deployments' own upstream keys.
"""

from __future__ import annotations

from decimal import Decimal
from http.client import HTTPConnection

import anthropic
import orjson
import pytest

from apps.guardrails.services import guardrail_policy_set
from apps.teams.audit import Actor
from tests.factories import UserFactory
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import deploy, http, make_key, spend_event, unique_name

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

UPSTREAM_KEYS = {
    "anthropic": "sk-ant-upstream-pass-0001",
    "gemini": "goog-upstream-pass-0002",
    "openai": "sk-oai-upstream-pass-03",
}
PRICE = {"input_cost_per_token": "0.000001", "output_cost_per_token": "0.000002"}


@pytest.fixture
def models(gateway, upstream, tenant):
    names = {p: unique_name(p) for p in ("claude", "gemini", "gpt")}
    deploy(
        gateway,
        {"model_name": names["claude"], "provider": "anthropic", "model": "claude-up", "api_base": upstream.base,
         "api_key": UPSTREAM_KEYS["anthropic"], **PRICE},
        {"model_name": names["gemini"], "provider": "gemini", "model": "gemini-up",
         "api_base": upstream.base + "/gemini/v1beta", "api_key": UPSTREAM_KEYS["gemini"], **PRICE},
        {"model_name": names["gpt"], "provider": "openai", "model": "gpt-up", "api_base": upstream.url,
         "api_key": UPSTREAM_KEYS["openai"], **PRICE},
    )  # fmt: skip
    return names


def bearer(key) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.secret}"}


def no_client_secret(request: dict, secret: str) -> None:
    assert secret not in repr(request)


def test_anthropic_sdk_messages_through_the_passthrough(gateway, upstream, tenant, models):
    claude = anthropic.Anthropic(base_url=gateway.url + "/anthropic", api_key=tenant.alice_key.secret, max_retries=0)
    raw = claude.messages.with_raw_response.create(
        model=models["claude"], max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    message = raw.parse()
    assert message.usage.output_tokens == 5
    seen = upstream.last("/v1/messages")
    assert seen["path"] == "/v1/messages" and seen["body"]["model"] == "claude-up"
    assert seen["headers"]["x-api-key"] == UPSTREAM_KEYS["anthropic"]
    no_client_secret(seen, tenant.alice_key.secret)
    row = spend_event(raw.headers["x-request-id"])
    assert row["route"] == "/anthropic/*" and row["status"] == 200 and row["model"] == models["claude"]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (16, 5)  # 13 + 3 cache reads, as Anthropic reports
    assert Decimal(row["cost"]) > 0
    # Streaming: relayed as the upstream's own events, billed from message_start/message_delta.
    with claude.messages.stream(
        model=models["claude"], max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens == 5


def test_gemini_native_generate_content_with_its_own_key_conventions(gateway, upstream, tenant, models):
    path = f"/gemini/v1beta/models/{models['gemini']}:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    for auth in (
        {"headers": {"x-goog-api-key": tenant.alice_key.secret}},
        {"query": f"?key={tenant.alice_key.secret}"},
    ):
        answer = http("POST", gateway.url + path + auth.get("query", ""), json=body, headers=auth.get("headers"))
        assert answer.status_code == 200, answer.text
        assert answer.json()["usageMetadata"]["candidatesTokenCount"] == 4
        seen = upstream.last(":generateContent")
        assert seen["path"] == "/gemini/v1beta/models/gemini-up:generateContent"  # the deployment's model, no key=
        assert seen["headers"]["x-goog-api-key"] == UPSTREAM_KEYS["gemini"]
        no_client_secret(seen, tenant.alice_key.secret)
        row = spend_event(answer.headers["x-request-id"])
        assert (row["prompt_tokens"], row["completion_tokens"]) == (9, 4)
        assert Decimal(row["cost"]) == Decimal("0.000009") + Decimal("0.000008")
    stream = http(
        "POST", gateway.url + f"/gemini/v1beta/models/{models['gemini']}:streamGenerateContent?alt=sse", json=body,
        headers={"x-goog-api-key": tenant.alice_key.secret},
    )  # fmt: skip
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    assert b"from Gemini" in stream.content
    assert upstream.last(":streamGenerateContent")["path"].endswith(":streamGenerateContent?alt=sse")
    assert spend_event(stream.headers["x-request-id"])["completion_tokens"] == 4


def test_openai_native_route_bills_its_usage_and_uses_the_deployment_model(gateway, upstream, tenant, models):
    answer = http(
        "POST", gateway.url + "/openai/v1/responses", json={"model": models["gpt"], "input": "hi"},
        headers=bearer(tenant.alice_key),
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    seen = upstream.last("/v1/responses")
    assert seen["body"]["model"] == "gpt-up" and seen["headers"]["Authorization"] == f"Bearer {UPSTREAM_KEYS['openai']}"
    row = spend_event(answer.headers["x-request-id"])
    assert row["route"] == "/openai/*" and row["completion_tokens"] > 0 and Decimal(row["cost"]) > 0


def test_paths_without_a_model_need_a_default_deployment(gateway, upstream, tenant, models):
    url = gateway.url + "/openai/v1/files/file-abc123"
    assert http("GET", url, headers=bearer(tenant.alice_key)).status_code == 404
    default = unique_name("gpt-default")
    deploy(
        gateway,
        {"model_name": default, "provider": "openai", "model": "gpt-up", "api_base": upstream.url,
         "api_key": UPSTREAM_KEYS["openai"], "organization": tenant.acme, "extra": {"passthrough_default": True}},
    )  # fmt: skip
    answer = http("GET", url, headers=bearer(tenant.alice_key))
    assert answer.status_code == 200 and answer.json()["id"] == "file-abc123"
    # Another organization's default is not Charlie's.
    assert http("GET", url, headers=bearer(tenant.charlie_key)).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/openai/v1/../../admin/",
        "/openai/v1/%2e%2e/%2e%2e/admin/",
        "/openai/v1/files%2F..%2F..%2Fadmin",
        "/openai//evil.example/v1/responses",
        "/openai/https://evil.example/v1/responses",
        "/openai/v1/files\\..\\admin",
        "/gemini/v1beta/models/./x:generateContent",
    ],
)
def test_paths_that_could_leave_the_deployment_base_are_refused(gateway, upstream, tenant, models, path):
    before = len(upstream.requests)
    answer = http("POST", gateway.url + path, json={"model": models["gpt"]}, headers=bearer(tenant.alice_key))
    assert answer.status_code == 400, (path, answer.status_code, answer.text)
    assert answer.json()["error"]["code"] == "invalid_path"
    assert len(upstream.requests) == before


def test_refusals_keys_models_and_limits(gateway, upstream, tenant, models):
    url = gateway.url + "/anthropic/v1/messages"
    body = {"model": models["claude"], "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    assert http("POST", url, json=body).status_code == 401
    assert http("POST", url, json={**body, "model": "nope"}, headers=bearer(tenant.alice_key)).status_code == 404
    assert (
        http("POST", gateway.url + "/anthropic/v2/messages", json=body, headers=bearer(tenant.alice_key)).status_code
        == 404
    )
    narrow = make_key(tenant.alpha, tenant.alice, allowed_models=[models["gpt"]])
    assert http("POST", url, json=body, headers=bearer(narrow)).status_code == 403
    # A model with no deployment of this provider.
    assert http("POST", url, json={**body, "model": models["gpt"]}, headers=bearer(narrow)).status_code == 400
    limited = make_key(tenant.alpha, tenant.alice, rpm_limit=1)
    assert http("POST", url, json=body, headers={"x-api-key": limited.secret}).status_code == 200
    refused = http("POST", url, json=body, headers={"x-api-key": limited.secret})
    assert refused.status_code == 429 and refused.json()["error"]["llm_provider"] == "anthropic"
    assert int(refused.headers["retry-after"]) >= 1
    # Client-chosen upstream fields are refused as on /v1.
    assert (
        http("POST", url, json={**body, "api_base": "http://evil"}, headers=bearer(tenant.alice_key)).status_code == 400
    )


def test_upstream_errors_are_relayed_without_the_deployment_secrets(gateway, upstream, tenant):
    names = {m: unique_name(m) for m in ("auth-fail", "bad-request")}
    deploy(
        gateway,
        *({"model_name": names[m], "provider": "openai", "model": m, "api_base": upstream.url,
           "api_key": UPSTREAM_KEYS["openai"]} for m in names),
    )  # fmt: skip
    url = gateway.url + "/openai/v1/chat/completions"
    messages = [{"role": "user", "content": "hi"}]
    rejected = http(
        "POST", url, json={"model": names["auth-fail"], "messages": messages}, headers=bearer(tenant.alice_key)
    )
    assert (
        rejected.status_code == 502 and "sk-proj" not in rejected.text and UPSTREAM_KEYS["openai"] not in rejected.text
    )
    bad = http(
        "POST", url, json={"model": names["bad-request"], "messages": messages}, headers=bearer(tenant.alice_key)
    )
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "upstream says no"
    assert spend_event(bad.headers["x-request-id"])["status"] == 400


def test_a_stream_is_relayed_as_it_comes_and_a_client_leaving_is_recorded(gateway, upstream, tenant):
    name = unique_name("drip")
    deploy(gateway, {"model_name": name, "provider": "openai", "model": "drip", "api_base": upstream.url})
    connection = HTTPConnection("127.0.0.1", gateway.port, timeout=20)
    body = {"model": name, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    connection.request(
        "POST", "/openai/v1/chat/completions", body=orjson.dumps(body),
        headers={**bearer(tenant.alice_key), "content-type": "application/json"},
    )  # fmt: skip
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("content-type").startswith("text/event-stream")
    # The upstream drips a chunk every 100 ms for 30 s: the first one arrives long before the stream ends.
    assert response.readline().startswith(b"data: ")
    request_id = response.getheader("x-request-id")
    connection.close()
    row = spend_event(request_id, timeout=20)
    assert row["status"] == 499 and row["error_type"] == "client_disconnect"


def test_a_key_with_a_guardrail_policy_is_refused_rather_than_relayed_unchecked(gateway, upstream, tenant, models):
    operator = Actor(user=UserFactory(username=unique_name("op"), is_staff=True, is_superuser=True), source="api")
    guarded = make_key(tenant.alpha, alias=unique_name("guarded"))
    guardrail_policy_set(actor=operator, key=guarded, config={"pii": {"entities": {"email": "mask"}}})
    before = len(upstream.requests)
    body = {"model": models["claude"], "max_tokens": 10, "messages": [{"role": "user", "content": "jane@example.com"}]}
    refused = http("POST", gateway.url + "/anthropic/v1/messages", json=body, headers=bearer(guarded))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "guardrails_unsupported"
    assert len(upstream.requests) == before
