"""A worker's shutdown never hangs on its background Redis listeners.

Found while adding overload shedding: stopping the cache sync one or a few loop passes after starting
it hung forever, because redis-py turned the cancel that landed inside its connect timeout into a
TimeoutError and the reconnect loop retried. Every stop here must end promptly, whenever it comes.
"""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings

from apps.proxy.cache_sync import CacheSync
from apps.proxy.cooldown_sync import CooldownSync

pytestmark = [pytest.mark.integration]


@pytest.fixture(autouse=True)
def _needs_redis():
    if not settings.REDIS_URL:
        pytest.skip("needs the Redis started by scripts/test.sh")


async def _stop_soon_after_start(make, passes: int) -> None:
    sync = make()
    sync.start()
    for _ in range(passes):
        await asyncio.sleep(0)
    # Not wait_for: a stop stuck in the old code swallowed wait_for's cancel too and hung the test.
    stopping = asyncio.ensure_future(sync.stop())
    done, _pending = await asyncio.wait({stopping}, timeout=10)
    assert stopping in done, f"stop() still running 10 s after a start {passes} loop passes earlier"


@pytest.mark.parametrize("passes", range(0, 12))
async def test_the_cache_sync_stops_whenever_it_is_stopped(passes):
    for _ in range(3):
        await _stop_soon_after_start(lambda: CacheSync(redis=settings.REDIS_URL, on_change=lambda _r: None), passes)


@pytest.mark.parametrize("passes", range(0, 12))
async def test_the_cooldown_sync_stops_whenever_it_is_stopped(passes):
    for _ in range(3):
        await _stop_soon_after_start(lambda: CooldownSync(redis=settings.REDIS_URL, apply=lambda *_a: None), passes)
