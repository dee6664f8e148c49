"""Logs an operator can use during an incident (issue 13, item 7).

On main, 3,301 upstream failures and the cooldown they caused wrote no log line at all. Now an upstream
failing 500 times in a few seconds is a handful of lines per worker whose counts add up to the 500,
each cooldown is logged, and with ``LOG_FORMAT=json`` every line the gateway writes is one JSON object;
the first line of a burst carries the id of a request the client really got back (``x-request-id``).
Real uvicorn workers, a real upstream answering HTTP 500 over the network.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from django.conf import settings

from tests.factories import DeploymentFactory, TeamFactory, VirtualKeyFactory
from tests.integration.ratelimit_support import GatewayServer, MockUpstream
from tests.integration.test_ratelimit_workers import chat

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]

INTERVAL = 2.0  # LOG_EVENT_INTERVAL_SECONDS for the test: summaries within seconds, not the default 10


@pytest.fixture
def upstream():
    with MockUpstream() as server:
        yield server


@pytest.fixture
def failing(transactional_db, upstream):
    # "flaky" never cools down (so all 500 requests reach it); "dying" cools down after 3 failures.
    flaky = DeploymentFactory(
        model_name="logs-flaky", provider="openai", model="fail", api_base=upstream.url,
        extra={"cooldown_failures": 1_000_000},
    )  # fmt: skip
    dying = DeploymentFactory(
        model_name="logs-dying", provider="openai", model="fail", api_base=upstream.url,
        extra={"cooldown_failures": 3, "cooldown_seconds": 1.0},
    )  # fmt: skip
    key = VirtualKeyFactory(team=TeamFactory(name="Logs"), alias="logs")
    return flaky, dying, key


async def send(session, url: str, secret: str, model: str, n: int, in_flight: int) -> list[tuple[int, str]]:
    gate = asyncio.Semaphore(in_flight)
    headers = {"Authorization": f"Bearer {secret}"}

    async def one() -> tuple[int, str]:
        async with gate, session.post(f"{url}/v1/chat/completions", json=chat(model), headers=headers) as response:
            await response.read()
            return response.status, response.headers["x-request-id"]

    return await asyncio.gather(*(one() for _ in range(n)))


def json_lines(path) -> list[dict]:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
    return parsed


async def test_500_upstream_failures_are_a_handful_of_json_lines_with_counts(failing):
    flaky, dying, key = failing
    # Overload shedding off: on a loaded machine the burst's first requests would be 503s, not upstream failures.
    env = {"LOG_FORMAT": "json", "LOG_EVENT_INTERVAL_SECONDS": str(INTERVAL), "PROXY_NUM_RETRIES": "0",
           "PROXY_SHED_LOOP_LAG_MS": "0"}  # fmt: skip
    with GatewayServer(workers=2, **env) as gateway:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            started = time.monotonic()
            answers = await send(session, gateway.url, key.secret, "logs-flaky", 500, 50)
            burst_seconds = time.monotonic() - started
            for _ in range(4):  # each round: 3 failures cool "dying" down, the rest are answered 503 at once
                await send(session, gateway.url, key.secret, "logs-dying", 6, 1)
                await asyncio.sleep(1.2)
        await asyncio.sleep(2 * INTERVAL + 1)  # the summaries are written when an interval ends
        records = json_lines(gateway.log_path)

    assert {status for status, _ in answers} == {502}, sorted({status for status, _ in answers})
    request_ids = {request_id for _, request_id in answers}

    failures = [r for r in records if r.get("event_kind") == f"upstream:{flaky.pk}:5xx"]
    assert sum(r["event_count"] for r in failures) == 500, failures
    # Each worker: the first failure at once, then at most one summary per interval of the burst.
    assert len(failures) <= 2 * (2 + int(burst_seconds / INTERVAL)), (burst_seconds, failures)
    for record in failures:
        assert record["level"] == "WARNING" and record["logger"] == "apps.proxy.router"
        assert f"deployment {flaky.pk}:openai/fail of 'logs-flaky' answered HTTP 500" in record["message"]
    firsts = [r for r in failures if "request_id" in r]
    assert firsts and all(r["request_id"] in request_ids for r in firsts), firsts  # a real request's id
    assert all("(x" in r["message"] for r in failures if "request_id" not in r)  # summaries: no request

    cooldowns = [r for r in records if r.get("event_kind") == f"cooldown:{dying.pk}"]
    assert cooldowns, [r["message"] for r in records]
    assert "cooling down for" in cooldowns[0]["message"] and "3 failures" in cooldowns[0]["message"]
    # Nothing else was logged per request: 524 requests, a few dozen lines at most in the whole log.
    assert len(records) < 40, [r["message"] for r in records]
    print(f"500 upstream failures in {burst_seconds:.1f} s -> {len(failures)} lines; {len(records)} lines in all")
