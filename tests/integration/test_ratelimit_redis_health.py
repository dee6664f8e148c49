"""Fail open means Redis is unhealthy, never that the gateway is busy (issue 13, item 1).

Real uvicorn workers, the test run's real Redis, production defaults for the fail mode ("open") and the
limiter's Redis timeout: a healthy Redis must never let a request through uncounted, whatever the gap
before a burst and however busy the workers' event loops are.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from django.conf import settings

from tests.factories import DeploymentFactory, TeamFactory, VirtualKeyFactory
from tests.integration.ratelimit_support import GatewayServer, MockUpstream
from tests.integration.test_ratelimit_workers import chat, scrape, total

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]

# What an operator gets without setting anything (settings/base.py), not the suite's safer harness values.
PRODUCTION_DEFAULTS = {
    "RATELIMIT_FAIL_MODE": "open",
    "RATELIMIT_REDIS_TIMEOUT_MS": str(settings.RATELIMIT_REDIS_TIMEOUT_MS),
    # Overload shedding off: these bursts must keep the event loop as busy as it gets, so that a reply
    # waiting behind it is what the limiter meets (shedding has its own tests in test_proxy_overload.py).
    "PROXY_SHED_LOOP_LAG_MS": "0",
}


@pytest.fixture
def upstream():
    with MockUpstream() as server:
        yield server


def fail_open_decisions(url: str) -> float:
    samples = scrape(url)
    return sum(s.value for s in samples.get("gateway_ratelimit_fail_open_total", [])) + total(
        samples.get("gateway_ratelimit_backend_errors_total", []), mode="open"
    )


async def burst(session: aiohttp.ClientSession, url: str, secret: str, model: str, n: int, in_flight: int) -> list:
    """``n`` requests with at most ``in_flight`` of them open at once; the statuses in completion order."""
    gate = asyncio.Semaphore(in_flight)
    headers = {"Authorization": f"Bearer {secret}"}

    async def one() -> int:
        async with (
            gate,
            session.post(f"{url}/v1/chat/completions", json=chat(model), headers=headers) as response,
        ):
            await response.read()
            return response.status

    return await asyncio.gather(*(one() for _ in range(n)))


@pytest.fixture
def quiet_key(transactional_db, upstream):
    DeploymentFactory(model_name="rl-quiet", provider="openai", model="ok", api_base=upstream.url)
    return VirtualKeyFactory(team=TeamFactory(name="Quiet"), alias="quiet-20", rpm_limit=20)


@pytest.fixture
def busy_keys(transactional_db, upstream):
    DeploymentFactory(model_name="rl-busy", provider="openai", model="ok", api_base=upstream.url)
    team = TeamFactory(name="Busy")
    return VirtualKeyFactory(team=team, alias="limited-100", rpm_limit=100), VirtualKeyFactory(team=team, alias="free")


async def test_bursts_after_quiet_gaps_admit_exactly_the_limit(quiet_key):
    """Two workers, a new key with rpm_limit=20: 60 at once, then 3 s of quiet, again and again.

    The window slides over 60 s, so all four rounds (about 12 s) fall in one window: the first admits
    exactly 20 and every later round none. On main a round after 3 s of quiet often passed 60 of 60:
    the limiter's connection was closed as "stalled" and the backend marked down.
    """
    key = quiet_key
    with GatewayServer(workers=2, **PRODUCTION_DEFAULTS) as gateway:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            rounds = []
            for index in range(4):
                if index:
                    await asyncio.sleep(3.0)
                statuses = await burst(session, gateway.url, key.secret, "rl-quiet", 60, 60)
                rounds.append((statuses.count(200), statuses.count(429), len(statuses)))
        assert rounds == [(20, 40, 60), (0, 60, 60), (0, 60, 60), (0, 60, 60)], (rounds, gateway.output())
        assert fail_open_decisions(gateway.url) == 0, gateway.output()


async def test_four_busy_workers_admit_exactly_the_limit(busy_keys):
    """The issue's burst: a key with rpm_limit=100 sends 1,500 requests, 500 in flight, while an unlimited
    key sends 1,500 more at the same four workers. Exactly 100 pass; no fail-open decision is counted.
    On main between 121 and 756 passed: replies waited behind the workers' own busy loops past 50 ms."""
    limited, unlimited = busy_keys
    with GatewayServer(workers=4, **PRODUCTION_DEFAULTS) as gateway:
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=300)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            limited_statuses, unlimited_statuses = await asyncio.gather(
                burst(session, gateway.url, limited.secret, "rl-busy", 1500, 500),
                burst(session, gateway.url, unlimited.secret, "rl-busy", 1500, 500),
            )
        assert limited_statuses.count(200) == 100, (limited_statuses.count(200), gateway.output())
        assert limited_statuses.count(429) == 1400
        assert unlimited_statuses.count(200) == 1500, sorted(set(unlimited_statuses))
        assert fail_open_decisions(gateway.url) == 0, gateway.output()
