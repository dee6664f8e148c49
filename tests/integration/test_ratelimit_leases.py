"""Concurrency slots over real processes: a SIGKILLed gateway gives its slots back within one lease.

Two separate uvicorn processes share the test run's Redis (two machines, as far as the limiter can tell);
the mock upstream holds requests open as long as a test needs.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from django.conf import settings
from multidict import CIMultiDict

from tests.factories import DeploymentFactory, TeamFactory, VirtualKeyFactory
from tests.integration.ratelimit_support import GatewayServer, MockUpstream
from tests.integration.test_ratelimit_workers import scrape
from tests.support.processes import kill_process_group

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]
LEASE_SECONDS = 20  # the default RATELIMIT_SLOT_TTL_SECONDS


@pytest.fixture
def upstream():
    with MockUpstream() as server:
        yield server


@pytest.fixture
def team(transactional_db, upstream):
    team = TeamFactory(name="Leases")
    for name, upstream_model in (("rl-hang", "hang"), ("rl-slow", "slow"), ("rl-drip", "drip"), ("rl-ok", "ok")):
        DeploymentFactory(model_name=name, provider="openai", model=upstream_model, api_base=upstream.url)
    return team


@pytest.fixture
def four_at_a_time(team):
    return VirtualKeyFactory(team=team, alias="four-at-a-time", max_parallel_requests=4)


@pytest.fixture
def one_at_a_time(team):
    return VirtualKeyFactory(team=team, alias="one-stream", max_parallel_requests=1)


def chat(model: str, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "ping"}], **extra}


async def post(session, gateway, key, model: str, **extra) -> tuple[int, CIMultiDict, dict]:
    headers = {"Authorization": f"Bearer {key.secret}"}
    async with session.post(f"{gateway.url}/v1/chat/completions", json=chat(model, **extra), headers=headers) as r:
        return r.status, r.headers.copy(), await r.json(content_type=None)


def in_flight_on(gateway) -> float:
    samples = scrape(gateway.url).get("gateway_in_flight_requests", [])
    return sum(sample.value for sample in samples if sample.labels.get("route") == "/v1/chat/completions")


def parallel_refusal(status: int, body: dict) -> bool:
    return status == 429 and body["error"]["limit_type"] == "concurrent_requests"


async def test_a_sigkilled_workers_slots_come_back_within_a_lease(four_at_a_time):
    key = four_at_a_time
    with GatewayServer(workers=1) as doomed, GatewayServer(workers=1) as survivor:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            in_flight = [asyncio.create_task(post(session, doomed, key, "rl-hang")) for _ in range(4)]
            deadline = time.monotonic() + 60
            while in_flight_on(doomed) < 4:  # (watched on /metrics: a probe request would take a slot itself)
                assert time.monotonic() < deadline and not any(task.done() for task in in_flight), doomed.output()
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)
            status, _, body = await post(session, survivor, key, "rl-ok")
            assert parallel_refusal(status, body), (status, body)  # the four requests hold the key's four slots

            kill_process_group(doomed.process)  # SIGKILL: no post_call, no release, no more renewals
            killed_at = time.monotonic()
            outcomes = await asyncio.gather(*in_flight, return_exceptions=True)
            assert all(isinstance(outcome, aiohttp.ClientError) for outcome in outcomes), outcomes

            refusals: list[tuple[float, int]] = []
            while True:
                status, headers, body = await post(session, survivor, key, "rl-ok")
                if status == 200:
                    freed_at = time.monotonic()
                    break
                assert parallel_refusal(status, body), (status, body)
                refusals.append((time.monotonic(), int(headers["retry-after"])))
                assert time.monotonic() - killed_at < LEASE_SECONDS + 30, refusals
                await asyncio.sleep(0.5)

            # Back within the lease (plus the test's own polling), not after the old 11 minutes ...
            assert freed_at - killed_at <= LEASE_SECONDS + 5, (freed_at - killed_at, refusals)
            # ... and every 429 said when: the real remaining lease (renewed at most 5 s before the kill),
            # never the old fixed "1", and the slot was free by the time the first refusal named.
            first_at, first_retry = refusals[0]
            assert 10 <= first_retry <= LEASE_SECONDS, refusals
            assert all(1 <= retry <= LEASE_SECONDS for _, retry in refusals), refusals
            assert freed_at <= first_at + first_retry + 1.5, (freed_at - first_at, refusals)

            # All four dead leases ended together: the key runs four in parallel again, and not five.
            four = [asyncio.create_task(post(session, survivor, key, "rl-slow")) for _ in range(4)]
            await asyncio.sleep(1.0)
            fifth_status, _, fifth = await post(session, survivor, key, "rl-ok")
            assert parallel_refusal(fifth_status, fifth), (fifth_status, fifth)
            assert [status for status, _, _ in await asyncio.gather(*four)] == [200] * 4, survivor.output()


async def test_a_stream_longer_than_the_lease_keeps_its_slot(one_at_a_time):
    key = one_at_a_time
    env = {"RATELIMIT_SLOT_TTL_SECONDS": "2", "RATELIMIT_SLOT_RENEW_SECONDS": "0.5"}
    with GatewayServer(workers=2, **env) as gateway:
        headers = {"Authorization": f"Bearer {key.secret}"}
        async with aiohttp.ClientSession() as session:
            stream = await session.post(
                f"{gateway.url}/v1/chat/completions", json=chat("rl-drip", stream=True), headers=headers
            )
            assert stream.status == 200
            ends = time.monotonic() + 7  # three and a half leases
            chunks = 0
            while time.monotonic() < ends:
                for _ in range(20):  # a second of the stream (an event and a blank line every 100 ms) ...
                    if (await stream.content.readline()).startswith(b"data: "):
                        chunks += 1
                status, response_headers, body = await post(session, gateway, key, "rl-ok")
                assert parallel_refusal(status, body), (status, body)  # ... and the slot is still its own
                assert 1 <= int(response_headers["retry-after"]) <= 2
            assert chunks >= 30
            stream.close()
            for _ in range(50):  # the disconnect releases it (asynchronously)
                status, _, body = await post(session, gateway, key, "rl-ok")
                if not parallel_refusal(status, body):
                    break
                await asyncio.sleep(0.1)
            assert status == 200, body
