"""Concurrency slots are leases: renewed while their request runs, reclaimed when their worker died.

Same behaviour on the memory backend and on the real Redis of the test run. A worker "dies" here the way
SIGKILL leaves things: its requests never settle and nothing renews their leases any more
(tests/integration/test_ratelimit_leases.py kills a real uvicorn process).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from apps.ratelimit.backends.memory import MemoryBackend
from apps.ratelimit.backends.redis_backend import RedisBackend
from apps.ratelimit.errors import ProxyRateLimitError
from tests.unit.ratelimit_helpers import BACKENDS, admit, key_context, make_backend, make_chain, ok, request, scope

pytestmark = pytest.mark.parametrize("backend_kind", BACKENDS)
PARALLEL = ["apps.ratelimit.middleware.ParallelRequestLimiter"]


def worker(backend_kind: str, shared: MemoryBackend | None = None, renew_seconds: float = 0.1):
    """One worker's backend. Memory: the one process's backend (``shared``); Redis: its own connection."""
    backend = shared if shared is not None else make_backend(backend_kind)
    backend.renew_seconds = renew_seconds
    return backend


def kill(backend) -> None:
    """What SIGKILL leaves behind: the worker's requests never settle and its leases are no longer renewed."""
    if backend._renewer is not None:
        backend._renewer.cancel()
    backend.leases.clear()


async def refused(chain, ctx) -> ProxyRateLimitError:
    with pytest.raises(ProxyRateLimitError) as info:
        await admit(chain, ctx)
    await chain.post_call(ctx, ok(429))
    return info.value


async def test_a_dead_workers_slots_come_back_after_one_lease_and_the_429_says_when(backend_kind, settings):
    settings.RATELIMIT_SLOT_TTL_SECONDS = 1.5
    a = worker(backend_kind)
    b = a if backend_kind == "memory" else worker(backend_kind)
    chain_a, chain_b = make_chain(a, PARALLEL), make_chain(b, PARALLEL)
    key = key_context(scope("key", max_parallel_requests=2))
    for _ in range(2):
        await admit(chain_a, request(key))
    await asyncio.sleep(0.5)  # a few renewals: the leases now end ~1.5 s after the last one
    kill(a)
    killed_at = time.monotonic()

    error = await refused(chain_b, request(key))
    assert error.limit_type == "concurrent_requests"
    # The real remaining lease (never the old fixed 1 s): more than half a lease, at most one lease.
    assert 0.7 <= error.retry_after_ms / 1000 <= 1.5, error.retry_after_ms
    free_at = killed_at + error.retry_after_ms / 1000
    while time.monotonic() < free_at - 0.3:  # refused until then ...
        await refused(chain_b, request(key))
        await asyncio.sleep(0.1)
    await asyncio.sleep(max(0.0, free_at - time.monotonic()) + 0.1)
    # ... and both slots are back at once: the key runs two in parallel again.
    first, second = request(key), request(key)
    await admit(chain_b, first)
    await admit(chain_b, second)
    assert (await refused(chain_b, request(key))).limit_type == "concurrent_requests"


async def test_a_request_longer_than_the_lease_keeps_its_slot(backend_kind, settings):
    settings.RATELIMIT_SLOT_TTL_SECONDS = 0.6
    a = worker(backend_kind, renew_seconds=0.15)
    b = a if backend_kind == "memory" else worker(backend_kind)
    chain_a, chain_b = make_chain(a, PARALLEL), make_chain(b, PARALLEL)
    key = key_context(scope("key", max_parallel_requests=1))
    long_running = request(key)
    await admit(chain_a, long_running)
    deadline = time.monotonic() + 2.0  # more than three leases
    while time.monotonic() < deadline:
        error = await refused(chain_b, request(key))
        assert error.limit_type == "concurrent_requests"
        assert error.retry_after_ms <= 600
        await asyncio.sleep(0.1)
    await chain_a.post_call(long_running, ok())
    await admit(chain_b, request(key))  # released at the end, not by expiry


async def test_one_renewal_call_per_interval_carries_every_lease(backend_kind, settings):
    settings.RATELIMIT_SLOT_TTL_SECONDS = 5
    calls: list[int] = []
    base = MemoryBackend if backend_kind == "memory" else RedisBackend

    async def counted(self, leases):
        calls.append(len(leases))
        return await base._renew(self, leases)

    backend = make_backend(backend_kind)
    backend._renew = counted.__get__(backend)
    backend.renew_seconds = 0.2
    chain = make_chain(backend, PARALLEL)
    key = key_context(scope("key", max_parallel_requests=10), scope("team", max_parallel_requests=50))
    running = [request(key) for _ in range(10)]
    for ctx in running:
        await admit(chain, ctx)
    started = time.monotonic()
    await asyncio.sleep(0.9)
    elapsed = time.monotonic() - started
    # Not one call per request: one per interval, each renewing all 20 leases (10 requests x 2 scopes).
    assert calls and set(calls) == {20}, calls
    assert len(calls) <= elapsed / 0.2 + 1
    for ctx in running:
        await chain.post_call(ctx, ok())
    await asyncio.sleep(0.3)
    assert backend.leases == {} and backend._renewer.done()  # nothing held: no renewal task left running


async def test_an_expired_lease_is_never_revived(backend_kind, settings):
    """A worker whose loop stalled past its lease must not take back a slot another request now holds."""
    settings.RATELIMIT_SLOT_TTL_SECONDS = 0.3
    backend = worker(backend_kind, renew_seconds=10)  # the renewal comes too late
    chain = make_chain(backend, PARALLEL)
    key = key_context(scope("key", max_parallel_requests=1))
    stalled = request(key)
    await admit(chain, stalled)
    await asyncio.sleep(0.4)
    newcomer = request(key)
    await admit(chain, newcomer)  # the expired lease was reclaimed
    await backend.renew_leases()
    assert (await refused(chain, request(key))).limit_type == "concurrent_requests"
    await chain.post_call(newcomer, ok())
    await admit(chain, request(key))  # the stalled request's lease stayed gone: one slot, and it is free
    assert all(member != stalled.request_id for (_key, member) in backend.leases)
