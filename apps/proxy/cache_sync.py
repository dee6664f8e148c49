"""Keeps this worker's auth and registry caches in step with the database.

Writers call ``apps.common.invalidation.publish_invalidation`` after commit: it bumps a local counter
(same process) and, with Redis, increments ``gateway:auth-generation`` and publishes on
``gateway:invalidate``. Here a background task listens on the channel (immediate) and polls the
generation every second (safety net for a missed message or a reconnect), so a revoked key stops
working on every worker within about a second. Without Redis only the local counter exists, which the
hot path compares per request (one integer comparison).

``listen_forever`` is the reconnecting pub/sub loop; the router's cooldown sync
(``apps.proxy.cooldown_sync``, channel ``gateway:cooldown``) runs its own with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from apps.common import invalidation
from apps.common.redis_target import RedisTarget, redis_target

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 30.0


async def listen_forever(
    *,
    redis: RedisTarget,
    channels: tuple[str, ...],
    on_message: Callable[[Any], None],
    on_connect: Callable[[Any], Awaitable[None]] | None = None,
    on_lost: Callable[[], None] | None = None,
    name: str,
) -> None:
    """Subscribe to ``channels`` and hand every message's data to ``on_message``, until cancelled.

    A lost connection is logged and retried with exponential backoff (0.5 s doubling to 30 s, reset
    once connected). ``on_connect(client)`` runs after each subscribe, so nothing published meanwhile
    is missed (the cooldown sync reads the cooldowns still stored); ``on_lost()`` after each loss.
    """
    delay = RECONNECT_FIRST_SECONDS
    while True:
        # A new client per connection: with Sentinel it asks who the master is now (a failover moves it).
        client = redis.async_client(socket_connect_timeout=2, health_check_interval=30)
        try:
            # A cluster client must read its slot map before its pub/sub can pick a node (redis-py's
            # ClusterPubSub does not, and fails with a KeyError); for one server it does nothing.
            await client.initialize()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(*channels)
            if on_connect is not None:
                await on_connect(client)
            delay = RECONNECT_FIRST_SECONDS
            async for message in pubsub.listen():
                if message and message.get("type") == "message":
                    on_message(message["data"])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if _cancel_requested():
                # redis-py can turn a cancel that lands inside its connect timeout into a TimeoutError;
                # retrying would swallow the cancel and hang whoever stops this loop.
                raise asyncio.CancelledError from exc
            logger.warning("%s: pub/sub connection lost (%s); retrying in %.1f s", name, type(exc).__name__, delay)
            if on_lost is not None:
                on_lost()
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
        await asyncio.sleep(delay)
        delay = min(delay * 2, RECONNECT_MAX_SECONDS)


def _cancel_requested() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def cancel_and_wait(tasks: list[asyncio.Task], *, timeout: float = 5.0) -> None:
    """Cancel ``tasks`` and wait for them to end, cancelling again while one is still running.

    A single ``cancel()`` can be lost inside a library's own timeout handling; re-cancelling until the
    task ends (bounded by ``timeout``) keeps a worker's shutdown from hanging on it.
    """
    pending = {task for task in tasks if not task.done()}
    deadline = asyncio.get_running_loop().time() + timeout
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            logger.warning("%d background task(s) did not stop within %.1f s", len(pending), timeout)
            return
        _done, pending = await asyncio.wait(pending, timeout=min(0.1, remaining))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: an error on the way out is not worth a "never retrieved" warning


class CacheSync:
    def __init__(self, *, redis: RedisTarget | str | None, on_change: Callable[[str], None]) -> None:
        self.redis = redis_target(redis)
        self.on_change = on_change
        self._local_seen = invalidation.local_generation()
        self._remote_seen: bytes | None = None
        self._tasks: list[asyncio.Task] = []

    def check_local(self) -> None:
        """Per request: did this process itself change something (admin in the same process)?"""
        current = invalidation.local_generation()
        if current != self._local_seen:
            self._local_seen = current
            self.on_change("local")

    def start(self) -> None:
        if self.redis is not None and not self._tasks:
            self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._poll())]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []

    def _client(self):
        return self.redis.async_client(socket_connect_timeout=2, health_check_interval=30)

    async def _listen(self) -> None:
        await listen_forever(
            redis=self.redis,
            channels=(invalidation.CHANNEL,),
            on_message=lambda _data: self.on_change("pubsub"),
            on_lost=lambda: self.on_change("pubsub-reconnect"),
            name="cache sync",
        )

    async def _poll(self) -> None:
        client = self._client()
        try:
            while True:
                try:
                    current = await client.get(invalidation.GENERATION_KEY)
                    if self._remote_seen is not None and current != self._remote_seen:
                        self.on_change("generation")
                    self._remote_seen = current
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if _cancel_requested():
                        raise asyncio.CancelledError from exc  # the same lost cancel as in listen_forever
                    logger.warning("cache sync: generation poll failed (%s)", type(exc).__name__)
                await asyncio.sleep(POLL_SECONDS)
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
