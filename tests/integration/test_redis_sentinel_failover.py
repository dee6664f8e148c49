"""Redis Sentinel: a gateway (two workers) and a Celery worker configured only by sentinels follow a
failover forced in the middle of traffic.

Real processes on loopback: a master, a replica and three sentinels (tests/support/redis_sentinel.py),
uvicorn with ``REDIS_SENTINELS`` + ``REDIS_SENTINEL_MASTER`` (no ``REDIS_URL``), a Celery worker with its
beat draining the spend stream through the same sentinels, the mock upstream. What a user sees:

- every request sent while the master moves is answered (200: the limiter fails open for the seconds
  of the switch), none hangs or gets a 500;
- afterwards a fresh key's rpm limit is exact again (the limiter reconnected to the new master);
- the ledger holds exactly one row per 200, nothing lost and nothing twice (the outbox's WAIT sends a
  batch the replica did not acknowledge to the ledger directly; the UNIQUE request id dedupes);
- the auth-cache invalidation follows the master too: a key revoked after the failover stops working.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from django.conf import settings

from apps.spend.models import SpendLog
from tests.factories import DeploymentFactory, TeamFactory, VirtualKeyFactory
from tests.integration.spend_processes import CeleryWorker, wait_until
from tests.support.gateway import MASTER_KEY, GatewayServer, http
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


async def send(session: aiohttp.ClientSession, url: str, secret: str) -> int:
    async with session.post(
        f"{url}/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {secret}"}
    ) as response:
        await response.read()
        return response.status


async def traffic_during(gateway: GatewayServer, secret: str, switch) -> list[int]:
    """Four clients send requests until ``switch`` (a blocking failover, run in a thread) is over + 2 s."""
    statuses: list[int] = []
    done = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=30)  # a hang would show as a TimeoutError here, failing the test

    async def client(session: aiohttp.ClientSession) -> None:
        while not done.is_set():
            statuses.append(await send(session, gateway.url, secret))
            await asyncio.sleep(0.01)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        clients = [asyncio.create_task(client(session)) for _ in range(4)]
        await asyncio.sleep(1.0)  # traffic before the switch
        await asyncio.to_thread(switch)
        await asyncio.sleep(2.0)  # and after it
        done.set()
        await asyncio.gather(*clients)
    return statuses


@pytest.fixture
def group():
    with SentinelGroup() as sentinels:
        yield sentinels


def test_a_failover_during_traffic_loses_no_request_no_limit_and_no_ledger_row(
    transactional_db, settings, tmp_path, group
):
    settings.REDIS_TARGET = group.target  # this process's invalidations go to the sentinels' master too
    team = TeamFactory(name="Sentinel")
    busy = VirtualKeyFactory(team=team, alias="busy")
    with MockUpstream() as upstream:
        DeploymentFactory(model_name=MODEL, provider="openai", model="ok", api_base=upstream.url)
        worker = CeleryWorker(tmp_path, **group.env())
        worker.start()
        try:
            env = {**group.env(), "PROXY_SHED_LOOP_LAG_MS": "0", "RATELIMIT_FAIL_MODE": "open"}
            with GatewayServer(workers=2, RATELIMIT_REDIS_TIMEOUT_MS="500", **env) as gateway:
                gateway.wait_for_models({MODEL})
                old_master = group.master_port()
                statuses = asyncio.run(traffic_during(gateway, busy.secret, group.failover))
                assert group.master_port() != old_master

                # Every request was answered, and with the limiter failing open, answered 200.
                assert statuses and set(statuses) == {200}, (sorted(set(statuses)), gateway.output())

                # The limiter is exact again on the new master: a fresh key gets exactly its rpm.
                limited = VirtualKeyFactory(team=team, alias="limited", rpm_limit=7)

                async def burst() -> list[int]:
                    async with aiohttp.ClientSession() as session:
                        return [await send(session, gateway.url, limited.secret) for _ in range(10)]

                after = asyncio.run(burst())
                assert after.count(200) == 7 and after.count(429) == 3, (after, gateway.output())

                # Invalidation follows the master: a key revoked through the API stops working on both workers.
                revoke = http("POST", f"{gateway.url}/api/v1/keys/{busy.pk}/revoke/", headers=MASTER)
                assert revoke.status_code == 200, revoke.text

                late: list[int] = []  # answers to the revoked key until it is refused (200s are billed too)

                def revoked() -> bool:
                    async def one() -> int:
                        async with aiohttp.ClientSession() as session:
                            return await send(session, gateway.url, busy.secret)

                    late.append(asyncio.run(one()))
                    return late[-1] == 401

                wait_until(revoked, timeout=5, message="a revoked key still worked after the failover")
            served = statuses.count(200) + late.count(200)
            # The ledger: one row per answered request (429s are recorded too, at no cost), none twice; the
            # stream is drained by Celery through the sentinels.
            rows = SpendLog.objects.filter(key__team=team)
            expected = served + len(after)
            wait_until(
                lambda: rows.count() >= expected,
                timeout=90,
                message=f"the ledger did not reach {expected} rows ({len(statuses)} sent during the failover)",
                worker=worker,
            )
            time.sleep(2)  # anything extra (a duplicate) would land now
            assert rows.filter(key_id=busy.pk, status=200).count() == served
            assert rows.filter(key_id=limited.pk, status=200).count() == 7
            assert rows.count() == expected
            print(f"sentinel failover: {len(statuses)} requests during the switch, all 200; ledger {rows.count()} rows")
        finally:
            worker.stop()
