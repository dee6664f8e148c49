"""The per-source limit on key lookups (apps/proxy/auth_guard.py) inside the auth cache.

The loader stands in for the database (tests/e2e/test_proxy_auth_flood.py runs the real one over HTTP).
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from apps.proxy.auth import MASTER_CONTEXT, AuthCache
from apps.proxy.auth_guard import AuthMissGuard, client_address
from apps.proxy.errors import GatewayError
from apps.ratelimit.errors import ProxyRateLimitError

FLOOD, OFFICE = ("10.0.0.66", 5000), ("10.0.0.7", 5000)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache_with(valid: set[str], lookups: list[str], clock: Clock, *, burst: int = 5, per_source: int = 2):
    from apps.keys.hashing import keyed_hash

    by_hash = {keyed_hash(token): token for token in valid}

    def loader(key_hash):
        lookups.append(key_hash)
        token = by_hash.get(key_hash)
        return dataclasses.replace(MASTER_CONTEXT, is_master=False, key_id=hash(token)) if token else None

    async def run_sync(fn, *args):
        await asyncio.sleep(0.01)
        return fn(*args)

    guard = AuthMissGuard(rate=0.5, burst=burst, lookups_per_source=per_source, clock=clock)
    return AuthCache(ttl=30, master_key="sk-master", run_sync=run_sync, loader=loader, guard=guard)


async def test_a_flooding_source_is_refused_without_lookups_and_others_are_not(settings):
    lookups: list[str] = []
    clock = Clock()
    cache = cache_with({"sk-gw-new-office-key"}, lookups, clock)
    outcomes = await asyncio.gather(
        *(cache.authenticate(f"sk-gw-random-{i}", FLOOD) for i in range(100)), return_exceptions=True
    )
    unknown = [o for o in outcomes if isinstance(o, GatewayError) and o.status == 401]
    refused = [o for o in outcomes if isinstance(o, ProxyRateLimitError)]
    assert len(unknown) == 5 and len(refused) == 95  # the burst, then no more lookups
    assert len(lookups) == 5
    assert refused[0].scope == "client" and refused[0].to_body()["error"]["code"] == "rate_limit_exceeded"
    assert refused[0].retry_after == 2  # one token at 0.5/s

    # Another source's first request is looked up at once.
    assert (await cache.authenticate("sk-gw-new-office-key", OFFICE)).key_id is not None
    assert len(lookups) == 6

    clock.now += 2.0  # one token back for the flood source: one more lookup, then refused again
    with pytest.raises(GatewayError):
        await cache.authenticate("sk-gw-random-x", FLOOD)
    with pytest.raises(ProxyRateLimitError):
        await cache.authenticate("sk-gw-random-y", FLOOD)
    assert len(lookups) == 7


async def test_working_keys_never_use_up_a_source(settings):
    """A gateway restarted behind one NAT: fifty keys it has not cached yet, all fine."""
    lookups: list[str] = []
    valid = {f"sk-gw-team-key-{i}" for i in range(50)}
    cache = cache_with(valid, lookups, Clock(), burst=3)
    answers = await asyncio.gather(*(cache.authenticate(token, OFFICE) for token in sorted(valid)))
    assert len(answers) == 50 and len(lookups) == 50


async def test_one_source_runs_at_most_its_share_of_lookups_at_once(settings):
    lookups: list[str] = []
    cache = cache_with(set(), lookups, Clock(), burst=50, per_source=2)
    running, most = 0, 0
    run_sync = cache._run_sync

    async def counting(fn, *args):
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            return await run_sync(fn, *args)
        finally:
            running -= 1

    cache._run_sync = counting
    await asyncio.gather(*(cache.authenticate(f"sk-gw-r-{i}", FLOOD) for i in range(20)), return_exceptions=True)
    assert len(lookups) == 20 and most == 2


def test_the_source_is_the_peer_unless_proxies_are_trusted():
    assert client_address(("203.0.113.5", 1234), b"198.51.100.1", 0) == "203.0.113.5"  # header ignored
    assert client_address(("10.0.0.2", 1), b"1.2.3.4, 198.51.100.1", 1) == "198.51.100.1"  # our proxy's entry
    assert client_address(("10.0.0.2", 1), b"1.2.3.4, 198.51.100.1, 10.0.0.9", 2) == "198.51.100.1"
    assert client_address(("10.0.0.2", 1), b"not-an-address", 1) == "10.0.0.2"
    assert client_address(None, None, 0) == ""
