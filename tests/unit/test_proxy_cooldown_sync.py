"""Shared cooldowns without Redis: the wire format, applying remote cooldowns, and when to announce.

What goes over Redis (two real gateway processes, late joiners, the admin page) is tested in
tests/integration/test_proxy_cooldown_sync.py.
"""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from apps.proxy.cooldown_sync import CooldownMessage, CooldownSync
from apps.proxy.errors import UpstreamError
from apps.proxy.providers import build_adapters
from apps.proxy.registry import Deployment, Group
from apps.proxy.router import MAX_SHARED_COOLDOWN_SECONDS, Router

BOOM = UpstreamError(500, "boom", retryable=True)


def dep(id: int, **kw) -> Deployment:
    return Deployment(**{"id": id, "model_name": "m", "provider": "openai", "model": f"up{id}", **kw})


def shared_router(**kw) -> Router:
    """A router with a cooldown sync that never listens (and whose publishing the async tests fake)."""
    options = {"num_retries": 2, "timeout_seconds": 5, "cooldown_failures": 2, "cooldown_seconds": 10, **kw}
    router = Router(adapters=build_adapters(), redis="", **options)
    router.cooldown_sync = CooldownSync(redis="redis://127.0.0.1:1/0", apply=router.apply_shared_cooldown)
    return router


def left(router: Router, deployment_id: int) -> float:
    return router.health[deployment_id].cooldown_until - time.monotonic()


def test_message_round_trip_keeps_every_field():
    message = CooldownMessage(42, 7.25, "429 retry-after", "host:123:abcd")
    assert CooldownMessage.decode(message.encode()) == message
    assert CooldownMessage.decode(message.encode().decode()) == message  # str from a decoding client
    assert orjson.loads(message.encode()) == {"d": 42, "s": 7.25, "r": "429 retry-after", "w": "host:123:abcd"}


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b"{}",
        b'{"d": "7", "s": 5}',
        b'{"d": true, "s": 5}',
        b'{"d": 7, "s": "soon"}',
        b'{"d": 7, "s": 0}',
        b'{"d": 7, "s": -3}',
        b'{"d": 7, "s": NaN}',
        b'{"d": 7}',
    ],
)
def test_malformed_messages_decode_to_none(raw):
    assert CooldownMessage.decode(raw) is None


def test_a_long_reason_is_cut():
    message = CooldownMessage.decode(orjson.dumps({"d": 1, "s": 1, "r": "x" * 500, "w": "w"}))
    assert message is not None and len(message.reason) == 80


def test_without_redis_the_router_has_no_sync():
    router = Router(adapters=build_adapters(), num_retries=1, timeout_seconds=5, redis="")
    assert router.cooldown_sync is None
    router._failed(dep(1), UpstreamError(429, "slow", retryable=True, retry_after=30))
    assert left(router, 1) > 25  # cooling locally exactly as before


def test_a_remote_cooldown_steers_pick_away_from_the_deployment():
    router = shared_router()
    a, b = dep(1), dep(2)
    group = Group("m", (a, b))
    router.cooldown_sync.receive(CooldownMessage(1, 30.0, "3 failures (upstream_error)", "other-worker").encode())
    assert {router.pick(group, group.deployments, set()).id for _ in range(30)} == {2}
    assert 29 < left(router, 1) <= 30
    snapshot = router.snapshot()[1]
    assert snapshot["cooldown_reason"] == "shared: 3 failures (upstream_error)"
    assert snapshot["cooling_down_seconds"] > 29


def test_own_messages_are_ignored():
    router = shared_router()
    sync = router.cooldown_sync
    sync.receive(CooldownMessage(1, 30.0, "x", sync.worker_id).encode())
    assert 1 not in router.health
    assert sync.applied == 0


def test_the_later_end_wins_local_or_remote():
    router = shared_router()
    router._failed(dep(1), UpstreamError(429, "slow", retryable=True, retry_after=60))
    router.cooldown_sync.receive(CooldownMessage(1, 5.0, "shorter", "other").encode())
    assert left(router, 1) > 55  # a shorter remote cooldown never shortens the local one
    router.cooldown_sync.receive(CooldownMessage(2, 5.0, "first", "other").encode())
    router.cooldown_sync.receive(CooldownMessage(2, 20.0, "longer", "other").encode())
    assert 19 < left(router, 2) <= 20
    assert router.health[2].cooldown_reason == "shared: longer"


def test_remote_cooldowns_are_capped_and_malformed_ones_dropped():
    router = shared_router()
    router.cooldown_sync.receive(CooldownMessage(1, 10 * MAX_SHARED_COOLDOWN_SECONDS, "forever", "other").encode())
    assert left(router, 1) <= MAX_SHARED_COOLDOWN_SECONDS
    router.cooldown_sync.receive(b'{"d": 2, "s": -1, "w": "other"}')
    router.cooldown_sync.receive(b"garbage")
    assert 2 not in router.health


def faked_publishing(router: Router) -> list[CooldownMessage]:
    sent: list[CooldownMessage] = []

    async def publish(message: CooldownMessage) -> None:
        sent.append(message)

    router.cooldown_sync._publish = publish
    return sent


async def test_a_cooldown_start_is_announced_once_for_a_storm_of_failures():
    router = shared_router(cooldown_failures=1, cooldown_seconds=10)
    sent = faked_publishing(router)
    for _ in range(200):  # in-flight requests failing after the cooldown started
        router._failed(dep(1), BOOM)
    await asyncio.sleep(0)
    assert len(sent) == 1
    assert sent[0].deployment_id == 1 and 9 < sent[0].seconds <= 10
    assert sent[0].reason == "1 failures (upstream_error)" and sent[0].worker == router.cooldown_sync.worker_id


async def test_a_longer_retry_after_is_announced_again():
    router = shared_router(cooldown_failures=1, cooldown_seconds=5)
    sent = faked_publishing(router)
    router._failed(dep(1), BOOM)
    router._failed(dep(1), UpstreamError(429, "slow", retryable=True, retry_after=60))
    await asyncio.sleep(0)
    assert [round(m.seconds) for m in sent] == [5, 60]
    assert sent[1].reason == "429 retry-after"


async def test_a_cooldown_learned_from_another_worker_is_not_echoed():
    router = shared_router(cooldown_failures=1, cooldown_seconds=5)
    sent = faked_publishing(router)
    router.cooldown_sync.receive(CooldownMessage(1, 5.0, "seen elsewhere", "other").encode())
    router._failed(dep(1), BOOM)  # a request already in flight here fails too
    await asyncio.sleep(0)
    assert sent == []


async def test_a_new_cooldown_after_the_last_one_ended_is_announced():
    router = shared_router(cooldown_failures=1, cooldown_seconds=0.05)
    sent = faked_publishing(router)
    router._failed(dep(1), BOOM)
    await asyncio.sleep(0.06)  # the first cooldown is over
    router._failed(dep(1), BOOM)
    await asyncio.sleep(0)
    assert len(sent) == 2


def test_without_a_running_loop_nothing_is_announced():
    router = shared_router(cooldown_failures=1)
    router._failed(dep(1), BOOM)  # must neither raise nor leave a pending task behind
    assert router.health[1].cooldown_until > time.monotonic()
    assert not router.cooldown_sync._pending
