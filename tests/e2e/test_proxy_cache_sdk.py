"""The response cache through the official ``openai`` SDK against real gateway servers (docs/caching.md).

Runs on the suite's Redis (the shared gateway) and on the in-process store (a gateway with
``PROXY_CACHE_BACKEND=memory``); the upstream is the mock server over real HTTP, so "the upstream saw
one request" is counted where the requests arrive. Prompts carry a fresh id, so each test counts only
its own upstream requests.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from decimal import Decimal

import openai
import pytest
from openai import OpenAI

from tests.factories import CustomerFactory
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import GatewayServer, deploy, deploy_priced_model, make_key, spend_event, unique_name
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
ECHO_COST = "0.000025"  # the mock's usage (11 prompt, 7 completion) at 1e-6 / 2e-6 USD per token


@pytest.fixture(scope="module")
def memory_gateway(django_db_setup, django_db_blocker, upstream):
    with django_db_blocker.unblock(), GatewayServer(PROXY_CACHE_BACKEND="memory") as server:
        yield server


@pytest.fixture(params=["redis", "memory"])
def server(request, gateway):
    """Each cache test on both stores: Redis (the shared gateway) and a worker's own memory."""
    return gateway if request.param == "redis" else request.getfixturevalue("memory_gateway")


@pytest.fixture
def model(server, upstream, tenant):
    return deploy_priced_model(server, upstream)


def sdk(server: GatewayServer, key) -> OpenAI:
    return OpenAI(base_url=server.v1, api_key=key.secret, max_retries=0)


def prompt() -> str:
    return f"cache me {uuid.uuid4().hex[:10]}"


def upstream_calls(upstream, text: str) -> int:
    return sum(1 for r in list(upstream.requests) if text in str(r["body"].get("messages") or r["body"].get("input")))


def chat(client: OpenAI, model: str, text: str, **options):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **options
    )


def streamed_text(raw) -> tuple[str, list]:
    chunks = list(raw.parse())
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_an_identical_request_is_answered_from_the_cache_at_no_cost(server, model, upstream, tenant):
    tenant.alpha.cache_ttl_seconds = 300  # on for the team; the key inherits it
    tenant.alpha.save()
    client, text = sdk(server, make_key(tenant.alpha, tenant.alice)), prompt()
    first, second = chat(client, model, text), chat(client, model, text)
    assert first.headers["x-gateway-cache"] == "miss" and second.headers["x-gateway-cache"] == "hit"
    assert upstream_calls(upstream, text) == 1
    assert second.http_response.content == first.http_response.content  # the same bytes
    assert second.parse().choices[0].message.content == f"echo: {text}"
    assert first.headers["x-gateway-cost"] == ECHO_COST and second.headers["x-gateway-cost"] == "0"
    missed, hit = spend_event(first.headers["x-request-id"]), spend_event(second.headers["x-request-id"])
    assert (Decimal(missed["cost"]), missed["cache_hit"]) == (Decimal(ECHO_COST), False)
    assert (Decimal(hit["cost"]), hit["cache_hit"], Decimal(hit["cost_saved"])) == (0, True, Decimal(ECHO_COST))
    assert hit["deployment_id"] is None and hit["status"] == 200


def test_another_organization_never_gets_the_entry(server, model, upstream, tenant):
    text = prompt()
    alice = sdk(server, make_key(tenant.alpha, tenant.alice, cache_ttl_seconds=300))
    charlie = sdk(server, make_key(tenant.omega, tenant.charlie, cache_ttl_seconds=300))
    assert chat(alice, model, text).headers["x-gateway-cache"] == "miss"
    assert chat(charlie, model, text).headers["x-gateway-cache"] == "miss"  # same body, other organization
    assert chat(charlie, model, text).headers["x-gateway-cache"] == "hit"  # its own entry now
    assert upstream_calls(upstream, text) == 2


def test_no_cache_refreshes_and_no_store_leaves_the_cache_alone(server, model, upstream, tenant):
    client, text = sdk(server, make_key(tenant.alpha, tenant.alice, cache_ttl_seconds=300)), prompt()
    no_store = {"extra_headers": {"cache-control": "no-store"}}
    assert chat(client, model, text, **no_store).headers["x-gateway-cache"] == "bypass"
    assert chat(client, model, text).headers["x-gateway-cache"] == "miss"  # no-store kept nothing
    assert chat(client, model, text, **no_store).headers["x-gateway-cache"] == "bypass"  # nor read it
    assert chat(client, model, text, extra_headers={"cache-control": "no-cache"}).headers["x-gateway-cache"] == "miss"
    body_form = chat(client, model, text, extra_body={"cache": {"no-cache": True}})
    assert body_form.headers["x-gateway-cache"] == "miss"
    assert "cache" not in upstream.last("/chat/completions")["body"]  # the gateway's option, not the upstream's
    assert upstream_calls(upstream, text) == 5
    assert chat(client, model, text).headers["x-gateway-cache"] == "hit"
    assert upstream_calls(upstream, text) == 5


def test_a_stream_is_kept_and_replayed_as_a_stream_and_as_json(server, model, upstream, tenant):
    client, text = sdk(server, make_key(tenant.alpha, tenant.alice, cache_ttl_seconds=300)), prompt()
    usage = {"stream_options": {"include_usage": True}}
    first = chat(client, model, text, stream=True, **usage)
    first_text, _ = streamed_text(first)
    replay = chat(client, model, text, stream=True, **usage)
    assert (first.headers["x-gateway-cache"], replay.headers["x-gateway-cache"]) == ("miss", "hit")
    replay_text, replay_chunks = streamed_text(replay)  # the SDK's stream parser reads the replay
    assert replay_text == first_text == f"echo: {text}"
    assert replay_chunks[0].choices[0].delta.role == "assistant"
    assert replay_chunks[-2].choices[0].finish_reason == "stop"
    assert replay_chunks[-1].choices == [] and replay_chunks[-1].usage.completion_tokens == 7
    quiet_text, quiet_chunks = streamed_text(chat(client, model, text, stream=True))  # no include_usage
    assert quiet_text == first_text and all(c.usage is None for c in quiet_chunks)
    whole = chat(client, model, text)  # JSON from the stream's entry
    assert whole.headers["x-gateway-cache"] == "hit"
    completion = whole.parse()
    assert completion.choices[0].message.content == first_text and completion.usage.total_tokens == 18
    assert upstream_calls(upstream, text) == 1
    assert Decimal(spend_event(replay.headers["x-request-id"])["cost_saved"]) == Decimal(ECHO_COST)


def test_a_json_answer_is_replayed_to_a_streaming_client(server, model, upstream, tenant):
    client, text = sdk(server, make_key(tenant.alpha, tenant.alice, cache_ttl_seconds=300)), prompt()
    completion = chat(client, model, text).parse()
    replay = chat(client, model, text, stream=True, stream_options={"include_usage": True})
    assert replay.headers["x-gateway-cache"] == "hit"
    replay_text, chunks = streamed_text(replay)
    assert replay_text == completion.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == completion.usage.prompt_tokens
    assert upstream_calls(upstream, text) == 1


def test_a_stream_cut_short_is_not_kept(server, upstream, tenant):
    broken = deploy(server, {"model_name": unique_name(), "provider": "openai", "model": "break-stream",
                             "api_base": upstream.url})[0].model_name  # fmt: skip
    client, text = sdk(server, make_key(tenant.alpha, tenant.alice, cache_ttl_seconds=300)), prompt()
    for _ in range(2):
        with pytest.raises(openai.APIError):  # the gateway ends the broken stream with an error event
            list(chat(client, broken, text, stream=True).parse())
    assert upstream_calls(upstream, text) == 2  # the cut answer was never served from the cache


def test_a_streamed_tool_call_is_kept_whole(server, model, upstream, tenant):
    client, text = sdk(server, make_key(tenant.alpha, tenant.alice, cache_ttl_seconds=300)), prompt()
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    list(chat(client, model, text, stream=True, tools=tools).parse())
    whole = chat(client, model, text, tools=tools)
    assert whole.headers["x-gateway-cache"] == "hit"
    choice = whole.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "weather"
    assert choice.message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert chat(client, model, text).headers["x-gateway-cache"] == "miss"  # without tools: another entry
    assert upstream_calls(upstream, text) == 2


def test_entries_expire_after_their_ttl(server, model, upstream, tenant):
    client, text = sdk(server, make_key(tenant.alpha, tenant.alice, cache_ttl_seconds=1)), prompt()
    assert chat(client, model, text).headers["x-gateway-cache"] == "miss"
    deadline = time.monotonic() + 15
    while chat(client, model, text).headers["x-gateway-cache"] == "hit":
        assert time.monotonic() < deadline, "the entry never expired"
        time.sleep(0.1)
    assert upstream_calls(upstream, text) == 2


def test_embeddings_are_cached(server, model, upstream, tenant):
    client, text = sdk(server, make_key(tenant.alpha, tenant.alice, cache_ttl_seconds=300)), prompt()
    first = client.embeddings.with_raw_response.create(model=model, input=[text, "two"])
    second = client.embeddings.with_raw_response.create(model=model, input=[text, "two"])
    assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == ("miss", "hit")
    assert second.parse().data[1].embedding == first.parse().data[1].embedding
    assert upstream_calls(upstream, text) == 1


def test_caching_off_for_the_key_bypasses(server, model, upstream, tenant):
    tenant.alpha.cache_ttl_seconds = 300
    tenant.alpha.save()
    client, text = sdk(server, make_key(tenant.alpha, tenant.alice, cache_ttl_seconds=0)), prompt()  # key wins
    answers = [chat(client, model, text) for _ in range(2)]
    assert [a.headers["x-gateway-cache"] for a in answers] == ["bypass", "bypass"]
    assert upstream_calls(upstream, text) == 2
    models = client.models.with_raw_response.list()
    assert "x-gateway-cache" not in models.headers  # not a cacheable route


def test_hits_count_against_rpm_but_not_budget(gateway, upstream, tenant):
    model = deploy_priced_model(gateway, upstream)
    # The first answer (0.000025 USD) spends most of the budget: another miss is refused, a hit (cost 0) is not.
    key = make_key(tenant.alpha, tenant.alice, cache_ttl_seconds=300, rpm_limit=4, max_budget="0.00003")
    client, text, small = sdk(gateway, key), prompt(), {"max_tokens": 5}
    assert chat(client, model, text, **small).headers["x-gateway-cache"] == "miss"
    with pytest.raises(openai.RateLimitError) as over_budget:
        chat(client, model, prompt(), **small)
    assert over_budget.value.body["limit_type"] == "budget"
    hits = [chat(client, model, text, **small) for _ in range(3)]
    assert [h.headers["x-gateway-cache"] for h in hits] == ["hit", "hit", "hit"]
    with pytest.raises(openai.RateLimitError) as refused:  # the fifth request in the minute (RPM 4)
        chat(client, model, text, **small)
    assert refused.value.body["limit_type"] == "requests"
    assert upstream_calls(upstream, text) == 1


def test_hits_skip_the_limiters_when_set_to_none(django_db_blocker, upstream, tenant):
    with GatewayServer(PROXY_CACHE_HITS_COUNT_AGAINST_LIMITS="none") as server:
        model = deploy_priced_model(server, upstream)
        client, text = sdk(server, make_key(tenant.alpha, tenant.alice, cache_ttl_seconds=300, rpm_limit=1)), prompt()
        answers = [chat(client, model, text) for _ in range(4)]  # RPM 1: only the miss counted
        assert [a.headers["x-gateway-cache"] for a in answers] == ["miss", "hit", "hit", "hit"]
        with pytest.raises(openai.RateLimitError):
            chat(client, model, prompt())  # a second miss in the minute is refused
        CustomerFactory(organization=tenant.acme, external_id="blocked-end-user", blocked=True)
        with pytest.raises(openai.PermissionDeniedError):  # `user` is not in the key: this would be a hit
            chat(client, model, text, user="blocked-end-user")
    assert upstream_calls(upstream, text) == 1


def test_redis_down_answers_every_request_as_a_miss(upstream, tenant):
    with RedisServer() as own_redis, GatewayServer(REDIS_URL=own_redis.url, LOG_EVENT_INTERVAL_SECONDS="60") as server:
        model = deploy_priced_model(server, upstream)
        client, text = sdk(server, make_key(tenant.alpha, tenant.alice, cache_ttl_seconds=300)), prompt()
        assert chat(client, model, text).headers["x-gateway-cache"] == "miss"
        assert chat(client, model, text).headers["x-gateway-cache"] == "hit"
        own_redis.kill()
        for _ in range(3):
            answer = chat(client, model, text)
            assert answer.headers["x-gateway-cache"] == "miss"
            assert answer.parse().choices[0].message.content == f"echo: {text}"
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
            metrics = response.read().decode()
        lines = metrics.splitlines()
        assert any(line.startswith("gateway_cache_lookups_total{") and 'result="error"' in line for line in lines)
        assert any(line.startswith('gateway_cache_errors_total{operation="get"}') for line in lines)
        assert server.output().count("response cache: Redis get failed") == 1  # once per interval
    assert upstream_calls(upstream, text) == 4
