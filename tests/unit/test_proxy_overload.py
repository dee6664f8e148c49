"""The overload shedder's pieces: the loop-lag monitor on a real event loop, and who is shed at which lag.

The end-to-end behaviour (a real worker under real load) is tests/e2e/test_proxy_overload.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from apps.proxy.auth import MASTER_CONTEXT, AuthCache
from apps.proxy.errors import GatewayError
from apps.proxy.overload import UNKNOWN_PRIORITY, LoadShedder, LoopLagMonitor
from apps.ratelimit import metrics


async def test_the_monitor_sees_a_blocked_loop_at_once_and_forgets_it_when_the_loop_is_free():
    monitor = LoopLagMonitor(sample_seconds=0.02)
    monitor.start()
    try:
        await asyncio.sleep(0.2)
        # A blocking call on the loop (what a CPU-bound burst of requests is): the next request already
        # sees how far behind the loop runs, before the sampler could wake.
        time.sleep(0.3)
        assert monitor.current() >= 0.25
        await asyncio.sleep(0.005)
        assert monitor.lag >= 0.06  # the late sample (~0.28 s) entered the smoothed value with weight 0.3
        await asyncio.sleep(1.5)
        assert monitor.current() < 0.05  # and left it once the loop ran free again
    finally:
        await monitor.stop()
    assert monitor.current() == monitor.lag  # stopped: no sampler that could be overdue


def _key(priority: int):
    from dataclasses import replace

    return replace(MASTER_CONTEXT, is_master=False, key_id=7, priority=priority)


def _shed_count(label: str) -> float:
    return metrics.SHED.labels(label)._value.get()


def shed_share(shedder: LoadShedder, lag: float, key, trials: int = 2000) -> float:
    shed = 0
    for _ in range(trials):
        try:
            shedder.admit(lag, key)
        except GatewayError:
            shed += 1
    return shed / trials


def test_each_priority_is_shed_from_its_own_multiple_of_the_threshold():
    shedder = LoadShedder(threshold_ms=100)
    before = _shed_count("0")
    with pytest.raises(GatewayError) as refused:
        shedder.admit(0.200, _key(0))  # one threshold past its tier: every new request
    assert _shed_count("0") == before + 1
    error = refused.value
    assert error.status == 503 and error.headers == {"retry-after": "1"}
    body = error.to_body()["error"]
    assert body["type"] == "overloaded_error" and body["code"] == "gateway_overloaded"
    assert "200 ms behind" in body["message"] and "priority 0" in body["message"]
    # Priority p: none shed up to (p + 1) x the threshold, a growing share up to one threshold more, then all.
    for priority, start in ((0, 0.1), (1, 0.2), (9, 1.0)):
        assert shed_share(shedder, start, _key(priority)) == 0
        assert 0.4 < shed_share(shedder, start + 0.05, _key(priority)) < 0.6
        assert 0.85 < shed_share(shedder, start + 0.09, _key(priority)) < 0.95
        assert shed_share(shedder, start + 0.1, _key(priority), trials=50) == 1


def test_a_key_not_authenticated_here_yet_is_shed_with_the_lowest_priority():
    """Its lookup would be a database round trip: the first thing an overloaded worker stops spending."""
    shedder = LoadShedder(threshold_ms=100)
    before = _shed_count(UNKNOWN_PRIORITY)
    with pytest.raises(GatewayError):
        shedder.admit(0.2, None)
    assert _shed_count(UNKNOWN_PRIORITY) == before + 1


def test_a_worker_more_than_a_second_behind_asks_for_that_long():
    with pytest.raises(GatewayError) as refused:
        LoadShedder(threshold_ms=100).admit(2.3, _key(0))
    assert refused.value.headers == {"retry-after": "3"}


async def test_a_zero_threshold_turns_shedding_off():
    shedder = LoadShedder(threshold_ms=0)
    shedder.start()
    time.sleep(0.1)
    assert shedder.lag_past_threshold() is None
    assert shedder.monitor._task is None  # no sampler at all
    await shedder.stop()


def test_known_peeks_at_the_cache_without_a_lookup():
    async def never(*_args):
        raise AssertionError("no database lookup while deciding to shed")

    cache = AuthCache(ttl=30, master_key="sk-master-0123456789", run_sync=never)
    assert cache.known(None) is None
    assert cache.known("sk-never-seen") is None
    assert cache.known("sk-master-0123456789") is MASTER_CONTEXT
    cache._entries["sk-cached"] = (_key(3), 0.0)  # expired entries still tell the priority
    assert cache.known("sk-cached").priority == 3
