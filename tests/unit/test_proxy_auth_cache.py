"""Authentication: where the bearer token comes from, and the auth cache in front of the database."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from apps.proxy.auth import bearer_token
from apps.proxy.errors import GatewayError
from apps.teams.access import effective


def test_bearer_token_sources_and_effective_models():
    assert bearer_token({b"authorization": b"Bearer sk-1"}) == "sk-1"
    assert bearer_token({b"authorization": b"Basic abc"}) is None
    assert bearer_token({b"x-api-key": b"sk-2"}) == "sk-2"
    assert bearer_token({b"api-key": b"sk-3"}) == "sk-3"
    assert effective([[], ["a", "b"], []], {}, {}) == frozenset({"a", "b"})
    assert effective([["a", "c"], ["a", "b"], None], {}, {}) == frozenset({"a"})
    assert effective([[], [], []], {}, {}) is None


def _cache(loader, ttl: float = 30.0):
    from apps.proxy.auth import AuthCache

    async def run_sync(fn, *args):
        await asyncio.sleep(0.01)
        return fn(*args)

    return AuthCache(ttl=ttl, master_key="sk-master", run_sync=run_sync, loader=loader)


def _context():
    from apps.proxy.auth import MASTER_CONTEXT

    return dataclasses.replace(MASTER_CONTEXT, is_master=False, key_id=1)


async def test_auth_cache_coalesces_concurrent_misses_and_caches(settings):
    calls = []
    cache = _cache(lambda key_hash: calls.append(key_hash) or _context())
    results = await asyncio.gather(*(cache.authenticate("sk-gw-a") for _ in range(20)))
    assert len(calls) == 1 and all(r.key_id == 1 for r in results)
    await cache.authenticate("sk-gw-a")
    assert len(calls) == 1  # served from the cache
    cache.clear()
    await cache.authenticate("sk-gw-a")
    assert len(calls) == 2


async def test_a_flood_of_unknown_keys_never_evicts_working_ones(settings, monkeypatch):
    from apps.proxy import auth

    monkeypatch.setattr(auth, "MAX_ENTRIES", 5)
    monkeypatch.setattr(auth, "MAX_NEGATIVE_ENTRIES", 5, raising=False)
    calls = []
    cache = _cache(lambda key_hash: calls.append(key_hash) or (_context() if len(calls) == 1 else None))
    await cache.authenticate("sk-gw-good")
    for i in range(12):
        with pytest.raises(GatewayError):
            await cache.authenticate(f"sk-gw-random-{i}")
    assert len(calls) == 13
    await cache.authenticate("sk-gw-good")
    assert len(calls) == 13  # still cached
    with pytest.raises(GatewayError):
        await cache.authenticate("sk-gw-random-11")  # the negative answer is cached too
    assert len(calls) == 13


async def test_a_working_key_past_its_ttl_is_served_while_it_reloads_in_the_background(settings):
    """Stale-while-revalidate for one more TTL: a known key never waits on the database."""
    from django.db import OperationalError

    state = {"ctx": _context(), "calls": 0, "gate": asyncio.Event(), "broken": False}

    def loader(key_hash):
        state["calls"] += 1
        if state["broken"]:
            raise OperationalError("connection refused")
        return state["ctx"]

    cache = _cache(loader, ttl=0.2)
    run_sync = cache._run_sync

    async def gated(fn, *args):
        if state["calls"] >= 1:
            await state["gate"].wait()  # the reload hangs until we let it go
        return await run_sync(fn, *args)

    cache._run_sync = gated
    assert (await cache.authenticate("sk-gw-a")).key_id == 1
    await asyncio.sleep(0.25)  # past the TTL, within the grace
    answer = await asyncio.wait_for(cache.authenticate("sk-gw-a"), timeout=0.1)  # not blocked by the reload
    assert answer.key_id == 1
    state["ctx"] = None  # meanwhile the key was revoked (and its invalidation message lost)
    state["gate"].set()
    for _ in range(100):
        if not cache._loading:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(GatewayError) as refused:
        await cache.authenticate("sk-gw-a")  # the refusal replaced the stale answer
    assert refused.value.status == 401

    # Past the grace the database is asked again in line: down means 503, not a stale answer forever.
    state.update(ctx=_context(), broken=False)
    cache.clear()
    await cache.authenticate("sk-gw-b")
    state["broken"] = True
    await asyncio.sleep(0.45)
    with pytest.raises(GatewayError) as unavailable:
        await cache.authenticate("sk-gw-b")
    assert unavailable.value.status == 503


async def test_auth_cache_same_401_and_master_key(settings):
    cache = _cache(lambda key_hash: None)
    for token in ("sk-gw-unknown", "", None):
        with pytest.raises(GatewayError) as refused:
            await cache.authenticate(token)
        assert refused.value.status == 401 and refused.value.message == "Invalid API key."
    assert (await cache.authenticate("sk-master")).is_master


async def test_auth_cache_expired_context_is_refused_and_db_outage_is_503(settings):
    import time as _time

    from django.db import OperationalError

    cache = _cache(lambda key_hash: dataclasses.replace(_context(), expires_at=_time.time() - 1))
    with pytest.raises(GatewayError) as refused:
        await cache.authenticate("sk-gw-old")
    assert refused.value.status == 401

    def broken(key_hash):
        raise OperationalError("connection refused")

    with pytest.raises(GatewayError) as unavailable:
        await _cache(broken).authenticate("sk-gw-x")
    assert unavailable.value.status == 503 and unavailable.value.headers["retry-after"] == "1"
