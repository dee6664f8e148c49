"""Redis Sentinel: a gateway (two workers) and a Celery worker configured only by sentinels follow a
failover in the middle of traffic: a ``SENTINEL FAILOVER`` (fail mode open), and the master SIGKILLed
so that the sentinels must notice and elect (fail mode closed: no master for a few seconds).

Real processes on loopback: a master, a replica and three sentinels (tests/support/redis_sentinel.py),
uvicorn with ``REDIS_SENTINELS`` + ``REDIS_SENTINEL_MASTER`` (no ``REDIS_URL``), a Celery worker with its
beat draining the spend stream through the same sentinels, the mock upstream. What a user sees:

- every request sent while the master moves is answered (200 with the limiter failing open for the
  seconds of the switch, or 503 + retry-after failing closed), none hangs or gets a 500;
- afterwards a fresh key's rpm limit is exact again (the limiter reconnected to the new master);
- the ledger holds exactly one row per 200, nothing lost and nothing twice (the outbox's WAIT sends a
  batch the replica did not acknowledge to the ledger directly; the UNIQUE request id dedupes);
- the other clients follow the master too: readiness, the live feed (channel layer), Django's cache,
  and the auth-cache invalidation (a key revoked after the failover stops working).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from django.conf import settings

from apps.common.redis_cache import TargetRedisCache
from apps.spend.models import SpendLog
from tests.factories import DeploymentFactory, TeamFactory, VirtualKeyFactory
from tests.integration.spend_processes import CeleryWorker, wait_until
from tests.support.gateway import MASTER_KEY, GatewayServer, http, live_feed_sees, operator_session_cookie
from tests.support.mock_upstream import MockUpstream
from tests.support.redis_sentinel import SentinelGroup

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs redis-server and Postgres from scripts/test.sh"),
]

MODEL = "sentinel-model"
MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}


def chat() -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 5}


async def send(session: aiohttp.ClientSession, url: str, secret: str) -> tuple[int, str | None]:
    """One chat request: its status and retry-after header."""
    async with session.post(
        f"{url}/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {secret}"}
    ) as response:
        await response.read()
        return response.status, response.headers.get("retry-after")


async def traffic_during(gateway: GatewayServer, secret: str, switch) -> list[tuple[int, str | None]]:
    """Four clients send requests until ``switch`` (a blocking failover, run in a thread) is over + 2 s."""
    answers: list[tuple[int, str | None]] = []
    done = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=30)  # a hang would show as a TimeoutError here, failing the test

    async def client(session: aiohttp.ClientSession) -> None:
        while not done.is_set():
            answers.append(await send(session, gateway.url, secret))
            await asyncio.sleep(0.01)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        clients = [asyncio.create_task(client(session)) for _ in range(4)]
        await asyncio.sleep(1.0)  # traffic before the switch
        await asyncio.to_thread(switch)
        await asyncio.sleep(2.0)  # and after it
        done.set()
        await asyncio.gather(*clients)
    return answers


def statuses_of(gateway: GatewayServer, secret: str, count: int) -> list[int]:
    async def run() -> list[int]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            return [(await send(session, gateway.url, secret))[0] for _ in range(count)]

    return asyncio.run(run())


@pytest.fixture
def group():
    with SentinelGroup() as sentinels:
        yield sentinels


@pytest.mark.parametrize(
    ("how", "fail_mode"),
    [("sentinel-failover", "open"), ("master-killed", "closed")],
)
def test_a_failover_during_traffic_loses_no_request_no_limit_and_no_ledger_row(
    transactional_db, settings, tmp_path, group, how, fail_mode
):
    settings.REDIS_TARGET = group.target  # this process's cache and invalidations use the sentinels too
    cache = TargetRedisCache("", {})
    cache.set("before-failover", "kept", 300)
    team = TeamFactory(name="Sentinel")
    busy = VirtualKeyFactory(team=team, alias="busy", rpm_limit=1_000_000)  # a limit: every request asks Redis
    watched = VirtualKeyFactory(team=team, alias="watched")
    cookie = operator_session_cookie()
    with MockUpstream() as upstream:
        DeploymentFactory(model_name=MODEL, provider="openai", model="ok", api_base=upstream.url)
        worker = CeleryWorker(tmp_path, **group.env())
        worker.start()
        try:
            env = {**group.env(), "PROXY_SHED_LOOP_LAG_MS": "0", "RATELIMIT_FAIL_MODE": fail_mode}
            with GatewayServer(workers=2, RATELIMIT_REDIS_TIMEOUT_MS="500", **env) as gateway:
                gateway.wait_for_models({MODEL})
                old_master = group.master_port()
                switch = group.failover if how == "sentinel-failover" else group.kill_master
                answers = asyncio.run(traffic_during(gateway, busy.secret, switch))
                assert group.master_port() != old_master
                statuses = [status for status, _ in answers]

                # Every request was answered: 200, or in fail mode closed a 503 with retry-after while the
                # limiter had no master (never a 500, never a hang).
                allowed = {200} if fail_mode == "open" else {200, 503}
                assert statuses and set(statuses) <= allowed, (sorted(set(statuses)), gateway.output())
                assert all(retry for status, retry in answers if status == 503)

                # The limiter is exact again on the new master: a fresh key gets exactly its rpm.
                limited = VirtualKeyFactory(team=team, alias="limited", rpm_limit=7)
                after = statuses_of(gateway, limited.secret, 10)
                assert after.count(200) == 7 and after.count(429) == 3, (after, gateway.output())

                # The other clients followed the master as well: readiness, the live feed (channel layer),
                # Django's cache in this process.
                ready = http("GET", f"{gateway.url}/health/ready")
                assert ready.status_code == 200 and ready.json()["checks"]["redis"] == "ok", ready.text
                sent, seen = asyncio.run(live_feed_sees([gateway], cookie, watched.secret, MODEL))
                assert sent <= seen
                cache.set("after-failover", "written", 300)
                assert cache.get("before-failover") == "kept" and cache.get("after-failover") == "written"

                # Invalidation follows the master: a key revoked through the API stops working on both workers.
                revoke = http("POST", f"{gateway.url}/api/v1/keys/{busy.pk}/revoke/", headers=MASTER)
                assert revoke.status_code == 200, revoke.text
                late: list[int] = []  # answers to the revoked key until it is refused (200s are billed too)

                def revoked() -> bool:
                    late.extend(statuses_of(gateway, busy.secret, 1))
                    return late[-1] == 401

                wait_until(revoked, timeout=5, message="a revoked key still worked after the failover")
            served = statuses.count(200) + late.count(200)
            # The ledger: one row per request served (none lost, none twice); the stream is drained by
            # Celery through the sentinels, batches the replica did not acknowledge came from the gateway.
            rows = SpendLog.objects.filter(key__team=team, status=200)
            expected = served + 7 + len(sent)
            wait_until(
                lambda: rows.count() >= expected,
                timeout=90,
                message=f"the ledger did not reach {expected} rows ({len(statuses)} sent during the failover)",
                worker=worker,
            )
            time.sleep(2)  # anything extra (a duplicate) would land now
            assert rows.filter(key_id=busy.pk).count() == served
            assert rows.filter(key_id=limited.pk).count() == 7
            assert rows.filter(key_id=watched.pk).count() == len(sent)
            print(
                f"sentinel {how} (fail mode {fail_mode}): {len(statuses)} requests during the switch, "
                f"{statuses.count(200)} x 200, {statuses.count(503)} x 503; ledger {rows.count()} rows of 200"
            )
        finally:
            worker.stop()
