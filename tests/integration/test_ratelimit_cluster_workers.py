"""The gateway on a real Redis Cluster (``REDIS_CLUSTER_NODES``), over real HTTP with several workers.

Four uvicorn workers admit exactly a key's limit on the cluster, with the request's counters in one
slot (the organization's) and spread over three (plus the user's and the deployment's capacity); a
manual master failover (``CLUSTER FAILOVER``) of the masters serving the organization and the spend
stream, under sixteen clients: every request answered, every admitted request in the ledger once
(a Celery worker drains the cluster's stream; its broker stays on ``REDIS_URL``), the counted ones all
in the counter on the new master, a fresh burst exact afterwards, and a key revoked through the API
refused by both workers (invalidation published on the cluster).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from django.conf import settings

from apps.spend.models import SpendLog
from apps.spend.outbox import STREAM_KEY
from tests.factories import DeploymentFactory, TeamFactory, UserFactory, VirtualKeyFactory
from tests.integration.ratelimit_support import MockUpstream
from tests.integration.spend_processes import CeleryWorker
from tests.integration.test_ratelimit_workers import chat
from tests.integration.test_redis_faults import Traffic
from tests.support.gateway import MASTER_KEY, GatewayServer, http
from tests.support.redis_cluster import RedisCluster, cli

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs Postgres and redis-server from scripts/test.sh"),
]


@pytest.fixture(scope="module")
def cluster():
    with RedisCluster(masters=3, replicas=1) as running:
        yield running


@pytest.fixture
def upstream():
    with MockUpstream() as server:
        yield server


def cluster_env(cluster: RedisCluster, **extra: str) -> dict[str, str]:
    return {"REDIS_CLUSTER_NODES": cluster.nodes, "PROXY_SHED_LOOP_LAG_MS": "0", **extra}


MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}


def counted(cluster: RedisCluster, key: str) -> int:
    return sum(int(value) for value in cli(cluster.master_for_key(key), "HVALS", key).split())


async def burst(url: str, secret: str, model: str, n: int) -> list[int]:
    headers = {"Authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession() as session:

        async def one() -> int:
            async with session.post(f"{url}/v1/chat/completions", json=chat(model), headers=headers) as response:
                body = await response.json(content_type=None)
                if response.status == 429:
                    assert body["error"]["scope"] == "key", body
                return response.status

        return list(await asyncio.gather(*(one() for _ in range(n))))


@pytest.fixture(params=["one-slot", "three-slots"])
def exact_key(request, transactional_db, upstream):
    """A key limited to 50 a minute; with "three-slots" its user's counter and the deployment's capacity
    (both far from binding) live in slots of their own, so every reservation spans three masters' slots."""
    spread = request.param
    team = TeamFactory(name=f"Cluster {spread}")
    extra = {"user": UserFactory(rpm_limit=100_000)} if spread == "three-slots" else {}
    DeploymentFactory(
        model_name=f"cl-{spread}", provider="openai", model="ok", api_base=upstream.url,
        rpm_limit=100_000 if spread == "three-slots" else None,
    )  # fmt: skip
    return VirtualKeyFactory(team=team, alias=f"exact-{spread}", rpm_limit=50, **extra), f"cl-{spread}"


async def test_four_workers_admit_exactly_the_rpm_limit_on_the_cluster(cluster, exact_key):
    key, model = exact_key
    with GatewayServer(workers=4, **cluster_env(cluster)) as gateway:
        statuses = await burst(gateway.url, key.secret, model, 200)
        assert statuses.count(200) == 50, (sorted(statuses), gateway.output())
        assert statuses.count(429) == 150
        # The sync channels (auth cache, cooldowns) subscribed on the cluster without a hitch.
        output = gateway.output()
        assert "Traceback" not in output and "connection lost" not in output, output
    assert counted(cluster, f"gw:rl:{{o:{key.organization_id}}}:rpm:key:{key.pk}") == 50


@pytest.fixture
def failover_keys(transactional_db, upstream):
    DeploymentFactory(model_name="rl-fault", provider="openai", model="ok", api_base=upstream.url)
    team = TeamFactory(name="Cluster failover")
    busy = VirtualKeyFactory(team=team, alias="counted", rpm_limit=1_000_000)
    return busy, VirtualKeyFactory(team=team, alias="small-20", rpm_limit=20)


def ledger_ids(key_id: int, status: int = 200) -> set[str]:
    from django.db import connection

    try:
        return set(SpendLog.objects.filter(key_id=key_id, status=status).values_list("request_id", flat=True))
    finally:
        connection.close()  # a thread's own connection: the test database is flushed after the test


async def until_refused(url: str, secret: str) -> list[tuple[int, str]]:
    """Requests on a just-revoked key until one is refused (401); every answer with its request id."""
    answers: list[tuple[int, str]] = []
    headers = {"Authorization": f"Bearer {secret}"}
    deadline = time.monotonic() + 5
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.post(f"{url}/v1/chat/completions", json=chat("rl-fault"), headers=headers) as response:
                await response.read()
                answers.append((response.status, response.headers.get("x-request-id", "")))
            if answers[-1][0] == 401:
                return answers
            await asyncio.sleep(0.05)
    raise AssertionError(f"the revoked key still worked after 5 s: {answers[-3:]}")


async def test_master_failovers_under_traffic_answer_everything_and_lose_nothing(cluster, failover_keys, tmp_path):
    """Celery's worker drains the spend stream from the cluster (its broker stays on REDIS_URL)."""
    busy, small = failover_keys
    org_counter = f"gw:rl:{{o:{busy.organization_id}}}:rpm:key:{busy.pk}"
    env = cluster_env(cluster, RATELIMIT_FAIL_MODE="open", RATELIMIT_REDIS_TIMEOUT_MS="500")
    switched: list[tuple[int, int]] = []
    worker = CeleryWorker(tmp_path, **cluster_env(cluster))
    worker.start()
    try:
        with GatewayServer(workers=2, **env) as gateway:
            traffic = Traffic(gateway.url, busy.secret)

            async def scenario() -> None:
                await asyncio.sleep(1.5)
                # The organization's master, then the spend stream's (when another one serves it).
                for key in (org_counter, STREAM_KEY):
                    master = cluster.master_for_key(key)
                    if any(master in pair for pair in switched):  # this shard switched already
                        continue
                    switched.append((master, await asyncio.to_thread(cluster.failover, master)))
                    await asyncio.sleep(1.5)

            await traffic.run(scenario)
            in_counter = counted(cluster, org_counter)  # before the revoked key's last requests add to it
            after = await burst(gateway.url, small.secret, "rl-fault", 40)
            # Invalidation on the cluster: a key revoked through the API stops on both workers.
            revoke = await asyncio.to_thread(
                http, "POST", f"{gateway.url}/api/v1/keys/{busy.pk}/revoke/", headers=MASTER
            )
            assert revoke.status_code == 200, revoke.text
            try:
                late = await until_refused(gateway.url, busy.secret)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{gateway.output()}") from None

        answers = traffic.answers
        assert not traffic.errors, traffic.errors[:5]
        assert {status for _, _, status, _, _ in answers} == {200}, gateway.output()
        assert cluster.master_for_key(org_counter) == switched[0][1]
        # A fresh burst after the switch is exact.
        assert after.count(200) == 20 and after.count(429) == 20, after
        # Every request the limiter counted is in the counter on the new master: no charge was lost.
        counted_answers = sum(1 for answer in answers if answer[4])
        assert in_counter == counted_answers
        # Every request answered 200 is in the ledger exactly once (ingested by Celery from the cluster's stream,
        # or written by the gateway itself when a batch could not reach the stream); nothing else is.
        answered = {request_id for _, _, _, request_id, _ in answers}
        answered |= {request_id for status, request_id in late if status == 200}
        deadline = time.monotonic() + 90
        found: set[str] = set()
        while time.monotonic() < deadline and found != answered:
            assert worker.proc.poll() is None, worker.log_tail()
            await asyncio.sleep(0.5)
            found = await asyncio.to_thread(ledger_ids, busy.pk)
        assert found == answered, (len(found), len(answered), worker.log_tail())
    finally:
        worker.stop()
    print(
        f"\n[cluster failover] {len(switched)} master(s) switched; {len(answers)} answers, all 200; "
        f"{len(answers) - counted_answers} admitted uncounted during the switch; counter {counted_answers} "
        f"of {counted_answers}; ledger {len(found)} of {len(answered)}; fresh burst {after.count(200)} of 40 (20); "
        f"revoked key refused after {len(late) - 1} more answers"
    )
