"""Limits hold across real worker processes: uvicorn --workers 4, real Redis and Postgres, real HTTP.

Needs the /v1 app (apps/proxy) and the test run's Redis; skipped cleanly without REDIS_URL.
"""

from __future__ import annotations

import asyncio
import urllib.request

import aiohttp
import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import DeploymentFactory, TeamFactory, VirtualKeyFactory
from tests.integration.ratelimit_support import GatewayServer, MockUpstream, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]


@pytest.fixture
def upstream():
    with MockUpstream() as server:
        yield server


@pytest.fixture
def tenant(transactional_db, upstream):
    """A team with one key limited to 50 requests a minute and an OpenAI-style deployment."""
    team = TeamFactory(name="Exact")
    DeploymentFactory(model_name="rl-exact", provider="openai", model="ok", api_base=upstream.url)
    key = VirtualKeyFactory(team=team, alias="exact-50", rpm_limit=50)
    return key


def chat(model: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "ping"}], **extra}


def scrape(url: str) -> dict[str, list]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list] = {"_text": [text]}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def total(samples: list, **labels) -> float:
    return sum(s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items()))


async def test_four_workers_admit_exactly_the_rpm_limit(tenant):
    # Overload shedding off: a loaded machine's loop lag would answer some of the 200 with 503s.
    with GatewayServer(workers=4, PROXY_SHED_LOOP_LAG_MS="0") as gateway:
        headers = {"Authorization": f"Bearer {tenant.secret}"}
        async with aiohttp.ClientSession() as session:

            async def one():
                async with session.post(
                    f"{gateway.url}/v1/chat/completions", json=chat("rl-exact"), headers=headers
                ) as response:
                    return response.status, response.headers.copy(), await response.json(content_type=None)

            results = await asyncio.gather(*(one() for _ in range(200)))

        statuses = sorted(status for status, _, _ in results)
        assert statuses.count(200) == 50, (statuses, gateway.output())
        assert statuses.count(429) == 150
        for status, response_headers, body in results:
            if status != 429:
                continue
            error = body["error"]
            assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
            assert error["llm_provider"] == "openai" and error["model"] == "rl-exact"
            assert error["limit_type"] == "requests" and error["scope"] == "key"
            assert 1 <= int(response_headers["retry-after"]) <= 61
            assert response_headers["x-ratelimit-limit-requests"] == "50"
            assert response_headers["x-ratelimit-remaining-requests"] == "0"
            assert "exact-50" in error["message"] and tenant.secret not in error["message"]

        # The scrape merges all four workers' samples (prometheus multiprocess mode).
        samples = scrape(gateway.url)
        assert tenant.secret not in samples["_text"][0]
        failures = [s for s in samples["gateway_failures_total"] if s.labels.get("model") == "rl-exact"]
        assert {s.labels["exception_class"] for s in failures} == {"Openai.ProxyRateLimitError"}
        assert total(failures, exception_status="429", provider="openai", team="Exact", key_alias="exact-50",
                     route="/v1/chat/completions") == 150  # fmt: skip
        requests = samples["gateway_requests_total"]
        assert total(requests, model="rl-exact", status="200") == 50
        assert total(requests, model="rl-exact", status="429") == 150


@pytest.fixture
def slot_tenant(transactional_db, upstream):
    team = TeamFactory(name="Slots")
    for name, upstream_model, timeout in (("rl-fail", "fail", None), ("rl-hang", "hang", 1.0),
                                          ("rl-drip", "drip", None), ("rl-ok", "ok", None)):  # fmt: skip
        DeploymentFactory(
            model_name=name, provider="openai", model=upstream_model, api_base=upstream.url, timeout_seconds=timeout
        )
    return VirtualKeyFactory(team=team, alias="one-at-a-time", max_parallel_requests=1)


async def _admitted_again(session, url, headers, attempts: int = 50) -> int:
    """The next request on the key; a slot released asynchronously may need a moment after a disconnect."""
    status = 0
    for _ in range(attempts):
        async with session.post(f"{url}/v1/chat/completions", json=chat("rl-ok"), headers=headers) as response:
            status = response.status
            body = await response.json(content_type=None)
        if status != 429 or body["error"]["limit_type"] != "concurrent_requests":
            return status
        await asyncio.sleep(0.2)
    return status


async def test_slots_are_released_on_upstream_error_timeout_and_client_disconnect(slot_tenant):
    with GatewayServer(workers=2, PROXY_NUM_RETRIES="0") as gateway:
        headers = {"Authorization": f"Bearer {slot_tenant.secret}"}
        url = f"{gateway.url}/v1/chat/completions"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, json=chat("rl-fail"), headers=headers) as response:
                assert response.status >= 500
            assert await _admitted_again(session, gateway.url, headers) == 200

            async with session.post(url, json=chat("rl-hang"), headers=headers) as response:
                assert response.status == 504
            assert await _admitted_again(session, gateway.url, headers) == 200

            # While a stream is running the key's only slot is taken ...
            response = await session.post(url, json=chat("rl-drip", stream=True), headers=headers)
            assert response.status == 200
            await response.content.readline()
            async with session.post(url, json=chat("rl-ok"), headers=headers) as second:
                assert second.status == 429
                assert (await second.json())["error"]["limit_type"] == "concurrent_requests"
            # ... and the client walking away gives it back.
            response.close()
            assert await _admitted_again(session, gateway.url, headers) == 200


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_redis_down_over_http_follows_the_fail_mode(tenant, mode):
    """Redis at a closed port: "open" serves the request uncounted, "closed" answers 503 in OpenAI shape."""
    closed = f"redis://127.0.0.1:{free_port()}/0"
    with GatewayServer(workers=1, REDIS_URL=closed, RATELIMIT_FAIL_MODE=mode, RATELIMIT_REDIS_TIMEOUT_MS="50") as gw:
        headers = {"Authorization": f"Bearer {tenant.secret}"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{gw.url}/v1/chat/completions", json=chat("rl-exact"), headers=headers) as response,
        ):
            body = await response.json(content_type=None)
        if mode == "open":
            assert response.status == 200, body
            assert body["choices"][0]["message"]["content"] == "pong"
        else:
            assert response.status == 503, body
            assert body["error"]["type"] == "service_unavailable"
            assert body["error"]["code"] == "rate_limiter_unavailable"
            assert response.headers["retry-after"] == "1"
        samples = scrape(gw.url)
        errors = total(samples["gateway_ratelimit_backend_errors_total"], mode=mode, operation="reserve")
        assert errors >= 1


async def test_embedded_default_without_redis_limits_with_the_memory_backend(tenant):
    """No REDIS_URL (the embedded default): one worker, in-process counters, same 429 contract."""
    with GatewayServer(workers=1, REDIS_URL="") as gateway:
        headers = {"Authorization": f"Bearer {tenant.secret}"}
        async with aiohttp.ClientSession() as session:

            async def one():
                async with session.post(
                    f"{gateway.url}/v1/chat/completions", json=chat("rl-exact"), headers=headers
                ) as response:
                    return response.status, await response.json(content_type=None)

            results = await asyncio.gather(*(one() for _ in range(60)))
        statuses = [status for status, _ in results]
        assert statuses.count(200) == 50 and statuses.count(429) == 10, gateway.output()
        refusal = next(body for status, body in results if status == 429)["error"]
        assert (refusal["llm_provider"], refusal["model"], refusal["scope"]) == ("openai", "rl-exact", "key")


@pytest.fixture
def scoped_tenant(transactional_db, upstream):
    from decimal import Decimal

    from tests.factories import CustomerFactory

    team = TeamFactory(name="Scoped", max_budget=Decimal("0.001"), budget_duration="1d")
    CustomerFactory(organization=team.organization, external_id="end-user-9", rpm_limit=2)
    DeploymentFactory(model_name="rl-scoped", provider="openai", model="ok", api_base=upstream.url)
    return VirtualKeyFactory(team=team, alias="agent-key", session_max_iterations=2)


async def test_customer_session_and_team_budget_refusals_over_http(scoped_tenant):
    with GatewayServer(workers=2) as gateway:
        url = f"{gateway.url}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {scoped_tenant.secret}"}

        def small(**extra):  # a small max_tokens keeps the estimate well inside the team's budget
            return chat("rl-scoped", max_tokens=10, **extra)

        async def post(session, body, extra=None):
            async with session.post(url, json=body, headers={**headers, **(extra or {})}) as response:
                return response.status, await response.json(content_type=None)

        async with aiohttp.ClientSession() as session:
            customer = [await post(session, small(user="end-user-9")) for _ in range(3)]
            assert [status for status, _ in customer] == [200, 200, 429], customer
            assert customer[2][1]["error"]["scope"] == "customer"
            assert (await post(session, small(user="someone-else")))[0] == 200

            agent = {"x-gateway-session-id": "run-1"}
            loop = [await post(session, small(), agent) for _ in range(3)]
            assert [status for status, _ in loop] == [200, 200, 429]
            assert (loop[2][1]["error"]["limit_type"], loop[2][1]["error"]["scope"]) == ("max_iterations", "session")
            body_session = small(metadata={"session_id": "run-2"})
            assert [(await post(session, body_session))[0] for _ in range(3)] == [200, 200, 429]

            # More than the team's whole budget in any window: a 400 that says so, not a 429 to retry.
            status, body = await post(session, chat("rl-scoped", max_tokens=5000))
            assert status == 400, body
            assert body["error"]["code"] == "max_tokens_exceeds_budget"
            assert "whole budget of team 'Scoped'" in body["error"]["message"]


@pytest.fixture
def one_rpm_key(transactional_db, upstream):
    team = TeamFactory(name="Sdk")
    DeploymentFactory(model_name="rl-sdk", provider="openai", model="ok", api_base=upstream.url)
    return VirtualKeyFactory(team=team, alias="sdk-key", rpm_limit=1)


async def test_the_official_openai_sdk_sees_our_429_as_rate_limit_error(one_rpm_key):
    import openai

    with GatewayServer(workers=1) as gateway:
        client = openai.AsyncOpenAI(api_key=one_rpm_key.secret, base_url=f"{gateway.url}/v1", max_retries=0)
        messages = [{"role": "user", "content": "ping"}]
        first = await client.chat.completions.create(model="rl-sdk", messages=messages)
        assert first.choices[0].message.content == "pong"
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="rl-sdk", messages=messages)
        error = info.value
        assert error.status_code == 429 and error.code == "rate_limit_exceeded"
        assert error.body["llm_provider"] == "openai" and error.body["model"] == "rl-sdk"
        assert 55 <= int(error.response.headers["retry-after"]) <= 61
        assert error.response.headers["x-request-id"]
        await client.close()
