"""The limiter on a real Redis Cluster: three masters with a replica each, started on loopback.

What a user of the gateway would see: an organization's limits reserved in one script on its slot,
limits shared across organizations (a deployment's capacity, a user in two organizations) exact under
concurrency through reserve-then-roll-back, the same decisions as the in-process backend, a master
failover under traffic that loses no charge, and a killed master that fails only its own slots (the
fail mode) until the cluster promotes its replica.
"""

from __future__ import annotations

import asyncio
import random
import threading
import uuid

import pytest

from apps.ratelimit.backends.base import BackendUnavailable
from apps.ratelimit.backends.cluster_backend import ClusterBackend
from apps.ratelimit.backends.resp_cluster import RespCluster, slot_of
from apps.ratelimit.errors import ProxyRateLimitError
from apps.ratelimit.plan import WINDOW, Check, counter_key
from apps.ratelimit.state import limiter_state
from tests.support.redis_cluster import RedisCluster, cli
from tests.unit.ratelimit_helpers import (
    deployment,
    key_context,
    make_backend,
    make_chain,
    ok,
    replay_on,
    request,
    scope,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster():
    with RedisCluster(masters=3, replicas=1) as running:
        yield running


def nodes(cluster: RedisCluster) -> list[tuple[str, int]]:
    return [("127.0.0.1", port) for port in cluster.ports]


@pytest.fixture
async def backend(cluster):
    made = ClusterBackend(nodes(cluster)[:1], timeout_ms=3000)  # one seed node: the rest is discovered
    yield made
    await made.close()


def window(tag: str, name: str, limit: int) -> Check:
    return Check(WINDOW, counter_key(tag, "rpm", name), limit, 1, "requests", "key", name)


def counted(cluster: RedisCluster, key: str) -> int:
    """What a window counter holds now, read from the master that serves it."""
    flat = cli(cluster.master_for_key(key), "HVALS", key).split()
    return sum(int(value) for value in flat)


async def test_an_organizations_counters_share_a_slot_and_organizations_spread_over_the_masters(cluster, backend):
    chain = make_chain(backend, ["apps.ratelimit.middleware.RateLimiter", "apps.ratelimit.middleware.BudgetLimiter"])
    masters = set()
    for org in range(1, 40):
        key = key_context(
            scope("key", rpm_limit=5),
            scope("team", rpm_limit=50, max_budget="1"),
            scope("organization", str(org), tpm_limit=10_000),
            organization_id=org,
        )
        ctx = request(key)
        await chain.pre_call(ctx)
        keys = [check.key for check in limiter_state(ctx).plan.checks]
        assert len(keys) == 4 and len({slot_of(k) for k in keys}) == 1, keys
        masters.add(cluster.master_for_key(keys[0]))
        await chain.post_call(ctx, ok())
    assert backend.rollbacks == 0
    assert len(masters) == 3  # the organizations' slots are spread over every master


async def test_four_hundred_concurrent_requests_admit_exactly_the_limit_across_slots(cluster, backend):
    """Key (org slot), user (its own slot) and deployment capacity (its slot): the key's 50 binds."""
    chain = make_chain(
        backend, ["apps.ratelimit.middleware.RateLimiter", "apps.ratelimit.middleware.DeploymentCapacityLimiter"]
    )
    key = key_context(scope("key", rpm_limit=50), scope("user", rpm_limit=10_000), organization_id=7)
    dep = deployment(random.randrange(10**6, 10**7), rpm_limit=10_000)

    async def one() -> bool:
        ctx = request(key, deployment=dep)
        try:
            await chain.pre_call(ctx)
        except ProxyRateLimitError as refusal:
            assert refusal.scope == "key" and refusal.limit_type == "requests"
            return False
        finally:
            await chain.post_call(ctx, ok())
        return True

    admitted = await asyncio.gather(*(one() for _ in range(400)))
    assert sum(admitted) == 50
    key_counter = counter_key("o:7", "rpm", "key", key.scopes[0].id)
    user_counter = counter_key(f"u:{key.scopes[1].id}", "rpm", "user", key.scopes[1].id)
    dep_counter = counter_key(f"d:{dep.id}", "rpm", f"dep:{dep.id}")
    assert len({slot_of(k) for k in (key_counter, user_counter, dep_counter)}) == 3
    # The 350 refused requests charged the user and the deployment too, and gave it back.
    assert [counted(cluster, counter) for counter in (key_counter, user_counter, dep_counter)] == [50, 50, 50]
    assert backend.rollbacks == 350


async def test_a_deployments_capacity_shared_by_two_organizations_is_never_exceeded(cluster, backend):
    chain = make_chain(
        backend, ["apps.ratelimit.middleware.RateLimiter", "apps.ratelimit.middleware.DeploymentCapacityLimiter"]
    )
    dep = deployment(random.randrange(10**7, 10**8), rpm_limit=30)
    tenants = [key_context(scope("key", rpm_limit=20), organization_id=org) for org in (101, 202)]
    decisions: dict[int, int] = {101: 0, 202: 0}

    async def one(key) -> None:
        ctx = request(key, deployment=dep)
        try:
            await chain.pre_call(ctx)
            decisions[key.organization_id] += 1
        except ProxyRateLimitError:
            pass
        finally:
            await chain.post_call(ctx, ok())

    await asyncio.gather(*(one(tenants[i % 2]) for i in range(200)))
    assert all(count <= 20 for count in decisions.values()), decisions
    assert sum(decisions.values()) <= 30
    # Every refused request's charges were rolled back: the counters hold exactly what was admitted.
    dep_counter = counter_key(f"d:{dep.id}", "rpm", f"dep:{dep.id}")
    assert counted(cluster, dep_counter) == sum(decisions.values())
    for key in tenants:
        key_counter = counter_key(f"o:{key.organization_id}", "rpm", "key", key.scopes[0].id)
        assert counted(cluster, key_counter) == decisions[key.organization_id]
    # Quiet again: the capacity left is exactly what the windows say (no leaked reservation).
    left = 30 - sum(decisions.values())
    admitted_now = 0
    for i in range(left + 5):
        ctx = request(tenants[0] if decisions[101] + admitted_now < 20 else tenants[1], deployment=dep)
        try:
            await chain.pre_call(ctx)
            admitted_now += 1
        except ProxyRateLimitError:
            pass
        await chain.post_call(ctx, ok())
        del i
    assert admitted_now == min(left, 40 - sum(decisions.values()))


async def test_slots_in_several_slots_are_released_and_renewed(cluster, backend):
    chain = make_chain(backend, ["apps.ratelimit.middleware.ParallelRequestLimiter"])
    key = key_context(scope("key", max_parallel_requests=2), scope("user", max_parallel_requests=2), organization_id=9)
    first, second, third = request(key), request(key), request(key)
    await chain.pre_call(first)
    await chain.pre_call(second)
    with pytest.raises(ProxyRateLimitError):
        await chain.pre_call(third)
    await chain.post_call(third, ok(429))
    assert len(backend.leases) == 4
    await backend.renew_leases()  # one call per slot, in parallel; nothing lost
    assert len(backend.leases) == 4
    await chain.post_call(first, ok())
    await chain.post_call(second, ok())
    assert not backend.leases
    again = request(key)
    await chain.pre_call(again)
    await chain.post_call(again, ok())


@pytest.mark.parametrize("seed", [1, 2])
async def test_memory_and_the_cluster_decide_alike(cluster, seed):
    """The parity replay of test_ratelimit_parity, with scopes in three slots (org, user, deployment)."""
    dep = deployment(random.randrange(10**8, 10**9), rpm_limit=60, max_parallel_requests=4)
    user = scope("user", rpm_limit=65, max_parallel_requests=4)
    memory = await replay_on(make_backend("memory"), seed, "0.04", extra_scopes=(user,), dep=dep)
    on_cluster = ClusterBackend(nodes(cluster), timeout_ms=3000)
    try:
        clustered = await replay_on(on_cluster, seed, "0.04", extra_scopes=(user,), dep=dep)
    finally:
        await on_cluster.close()
    assert memory == clustered
    assert len({d[2] for d in memory if d[0] == "refused"}) >= 2


async def test_a_slot_being_migrated_is_followed_through_ask_redirects(cluster, backend):
    """Mid-resharding a slot's new keys live on the importing node: the source answers ASK, the client
    sends ASKING + the command there (a script whole, since that node may not know it yet)."""
    check = window("o:31337", f"ask-{uuid.uuid4().hex[:8]}", 5)
    slot = slot_of(check.key)
    source = cluster.master_for_key(check.key)
    target = next(port for port in cluster.master_ports() if port != source)
    ids = {port: cli(port, "CLUSTER", "MYID").strip() for port in (source, target)}
    assert cli(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[source]).strip() == "OK"
    assert cli(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[target]).strip() == "OK"
    try:
        decisions = [await backend.reserve([window("o:31337", check.label, 5)]) is None for _ in range(7)]
        assert decisions == [True] * 5 + [False] * 2  # exact, counted on the importing node
        assert cli(source, "CLUSTER", "COUNTKEYSINSLOT", str(slot)).strip() == "0"
        assert cli(target, "CLUSTER", "COUNTKEYSINSLOT", str(slot)).strip() == "1"
    finally:
        for port in (source, target):
            cli(port, "CLUSTER", "SETSLOT", str(slot), "STABLE")


async def test_a_master_failover_under_traffic_loses_no_charge(cluster, backend):
    """CLUSTER FAILOVER on the replica of the master serving an organization, while requests keep coming."""
    org = 4242
    counter = window(f"o:{org}", f"failover-{uuid.uuid4().hex[:8]}", 1_000_000)
    master = cluster.master_for_key(counter.key)
    admitted = failed = 0
    stop = asyncio.Event()

    async def traffic() -> None:
        nonlocal admitted, failed
        while not stop.is_set():
            check = window(f"o:{org}", counter.label, 1_000_000)
            try:
                refusal = await backend.reserve([check])
            except BackendUnavailable:
                failed += 1  # the fail mode's share: not counted, not admitted by the limiter
                await asyncio.sleep(0.01)
                continue
            assert refusal is None
            admitted += 1

    workers = [asyncio.create_task(traffic()) for _ in range(8)]
    await asyncio.sleep(0.5)
    done = threading.Event()
    new_master: list[int] = []
    threading.Thread(target=lambda: (new_master.append(cluster.failover(master)), done.set()), daemon=True).start()
    while not done.is_set():
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # traffic on the new master
    stop.set()
    await asyncio.gather(*workers)
    assert cluster.master_for_key(counter.key) == new_master[0] != master
    assert admitted > 100
    # Every admitted reservation is in the counter on the new master: nothing charged was lost.
    assert counted(cluster, counter.key) == admitted
    assert failed <= admitted // 10, (failed, admitted)


async def test_a_killed_master_fails_only_its_slots_until_its_replica_takes_over(cluster):
    backend = ClusterBackend(nodes(cluster), timeout_ms=500)
    try:
        by_master: dict[int, Check] = {}
        org = 1
        while len(by_master) < 3:
            check = window(f"o:{org}", f"kill-{org}", 1_000_000)
            by_master.setdefault(cluster.master_for_key(check.key), check)
            org += 1
        victim, *others = by_master
        assert all([await backend.reserve([by_master[port]]) is None for port in by_master])
        cluster.processes[victim].kill()
        cluster.processes[victim].wait(10)
        with pytest.raises(BackendUnavailable) as unavailable:
            await backend.reserve([by_master[victim]])
        assert unavailable.value.reason in {"connection_lost", "connect_error", "breaker_open"}
        for port in others:  # the other masters' organizations are not affected
            assert await backend.reserve([by_master[port]]) is None
        # The cluster promotes the replica (cluster-node-timeout 2 s); the backend follows without a restart.
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            try:
                assert await backend.reserve([by_master[victim]]) is None
                break
            except BackendUnavailable:
                assert asyncio.get_running_loop().time() < deadline, "the replica never took over"
                await asyncio.sleep(0.2)
        assert counted(cluster, by_master[victim].key) >= 1
        # The dead master serves no slot now: its client (and its reconnect probe) is gone.
        client = backend._redis()
        await client.refresh(force=True)
        assert ("127.0.0.1", victim) not in client._clients
    finally:
        await backend.close()


async def test_the_client_follows_moved_redirects_from_a_stale_slot_map(cluster):
    client = RespCluster(nodes(cluster)[:1], stall_seconds=3.0)
    try:
        key = counter_key("o:77", "probe")
        await client.execute_on(key, "SET", key, "1")
        wrong = next(address for address in {a for a in client._owners if a} if address != client._owners[slot_of(key)])
        client._owners[slot_of(key)] = wrong  # as if the slot had moved since the map was read
        assert await client.execute_on(key, "GET", key) == b"1"
        assert client._owners[slot_of(key)] != wrong
    finally:
        client.close()


def test_counter_names_carry_the_hash_tag():
    assert counter_key("o:12", "rpm", "key", "34") == "gw:rl:{o:12}:rpm:key:34"
    assert slot_of("gw:rl:{o:12}:rpm:key:34") == slot_of("gw:rl:{o:12}:budget:team:5:1d:2026-12-05")
