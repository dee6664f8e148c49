"""The router's picks within one worker: priority, least busy, latency, weights, cooldowns."""

from __future__ import annotations

from apps.proxy.errors import UpstreamError
from apps.proxy.providers import build_adapters
from apps.proxy.registry import Group
from apps.proxy.router import Router
from tests.unit.proxy_support import dep


def _router() -> Router:
    return Router(adapters=build_adapters(), num_retries=2, timeout_seconds=5, cooldown_failures=2, cooldown_seconds=10)


def test_router_prefers_lower_priority_then_least_busy_and_lowest_latency():
    router = _router()
    a, b, c = dep(1, priority=0), dep(2, priority=0), dep(3, priority=1)
    group = Group("m", (a, b, c), strategy="least-busy")
    router._health(a).in_flight = 5
    assert router.pick(group, group.deployments, set()) is b
    assert router.pick(group, group.deployments, {1, 2}) is c  # both priority-0 tried: fall back
    latency = Group("m", (a, b), strategy="lowest-latency")
    router._succeeded(a, 50.0)
    router._succeeded(b, 5.0)
    assert router.pick(latency, latency.deployments, set()) is b


def test_router_weighted_shuffle_respects_zero_weight():
    router = _router()
    group = Group("m", (dep(1, weight=0), dep(2, weight=3)))
    assert {router.pick(group, group.deployments, set()).id for _ in range(50)} == {2}


def test_cooldown_after_repeated_failures_and_on_retry_after():
    router = _router()
    a, b = dep(1), dep(2)
    group = Group("m", (a, b))
    boom = UpstreamError(502, "boom", retryable=True)
    router._failed(a, boom)
    assert not router._health(a).cooling(__import__("time").monotonic())
    router._failed(a, boom)
    assert router.pick(group, group.deployments, set()) is b  # a cools down after 2 failures
    router._failed(b, UpstreamError(429, "slow", retryable=True, retry_after=30))
    assert router.pick(group, group.deployments, set()) is None
    assert 1 <= router._soonest_recovery(group) <= 30
    router._failed(dep(9), UpstreamError(400, "bad input"))  # client errors never cool a deployment
    assert not router._health(dep(9)).cooling(__import__("time").monotonic())
