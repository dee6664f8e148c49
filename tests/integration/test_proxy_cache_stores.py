"""The response cache's Redis store on each shape of Redis the gateway supports: one server (the suite's),
a Sentinel-watched master, and a Cluster (entries spread over every master's slots). Real servers."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from django.conf import settings

from apps.common.redis_target import RedisTarget
from apps.proxy.response_cache.store import RedisStore
from tests.support.redis_cluster import RedisCluster
from tests.support.redis_sentinel import SentinelGroup

pytestmark = pytest.mark.integration


def round_trip(target: RedisTarget, count: int = 30) -> None:
    async def run() -> None:
        store = RedisStore(target, timeout_seconds=3.0)
        try:
            keys = [f"gw:cache:v1:{uuid.uuid4().hex}" for _ in range(count)]
            for i, key in enumerate(keys):
                await store.set(key, f"answer {i}".encode(), 60)
            assert [await store.get(key) for key in keys] == [(f"answer {i}".encode(), True) for i in range(count)]
            assert await store.get("gw:cache:v1:never-stored") == (None, True)
        finally:
            await store.close()

    asyncio.run(run())


def test_one_server():
    round_trip(settings.REDIS_TARGET)


def test_sentinel_master():
    with SentinelGroup() as sentinels:
        round_trip(sentinels.target)


def test_cluster_keys_on_every_master():
    with RedisCluster(masters=3) as cluster:
        target = RedisTarget(cluster_nodes=(("127.0.0.1", cluster.ports[0]),))
        round_trip(target)
        owners = {cluster.master_for_key(f"gw:cache:v1:{uuid.uuid4().hex}") for _ in range(30)}
        assert len(owners) > 1  # the entries really are spread over the cluster


def test_an_unreachable_redis_is_a_miss_and_skipped_for_a_while():
    async def run() -> None:
        store = RedisStore(RedisTarget.from_url("redis://127.0.0.1:1/0"), timeout_seconds=0.5, retry_seconds=30)
        assert await store.get("gw:cache:v1:x") == (None, False)
        await store.set("gw:cache:v1:x", b"v", 60)  # dropped, no exception
        assert store._skip_until > 0
        await store.close()

    asyncio.run(run())
