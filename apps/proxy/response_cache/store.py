"""Where cached answers live: Redis (shared by every worker and machine) or this process's memory.

Both stores answer ``get``/``set`` and never raise: the cache is an optimisation, so a store that fails
(Redis down, a timeout, a damaged value) reads as a miss and drops the write. Failures are counted
(``gateway_cache_errors``) and logged once per interval, and after one the Redis store is skipped for
``retry_seconds`` so a dead Redis costs each request nothing, not a connect timeout.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

from prometheus_client import Counter

from apps.common.intervallog import IntervalLog

if TYPE_CHECKING:
    from apps.common.redis_target import RedisTarget

logger = logging.getLogger(__name__)

ERRORS = Counter(
    "gateway_cache_errors", "Response-cache store failures (each read as a miss), by operation.", ["operation"]
)


class CacheStore(Protocol):
    async def get(self, key: str) -> tuple[bytes | None, bool]:
        """(the value or None, whether the store answered)."""

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None: ...

    async def close(self) -> None: ...


class MemoryStore:
    """An LRU of at most ``max_bytes`` of values, each with its own expiry: the embedded default.

    One per worker process (entries are not shared between workers), bounded, so a flood of distinct
    requests evicts the oldest answers instead of growing the process.
    """

    def __init__(self, max_bytes: int, clock=time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    async def get(self, key: str) -> tuple[bytes | None, bool]:
        found = self._entries.get(key)
        if found is None:
            return None, True
        if found[1] <= self._clock():
            self._drop(key)
            return None, True
        self._entries.move_to_end(key)
        return found[0], True

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        if len(value) > self.max_bytes:
            return
        self._drop(key)
        self._entries[key] = (value, self._clock() + ttl_seconds)
        self.size += len(value)
        while self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self.size -= len(found[0])

    async def close(self) -> None:
        self._entries.clear()
        self.size = 0


class RedisStore:
    """``GET`` and ``SET key value PX ttl`` on the gateway's Redis (a URL, Sentinel's master, or a Cluster:
    one key per command, so any slot will do)."""

    def __init__(
        self, target: RedisTarget, *, timeout_seconds: float, retry_seconds: float = 1.0, log_interval: float = 10.0
    ) -> None:
        self.target = target
        self.timeout = timeout_seconds
        self.retry_seconds = retry_seconds
        self._client = None
        self._skip_until = 0.0
        self._log = IntervalLog(logger, interval=log_interval)

    def _redis(self):
        if self._client is None:
            self._client = self.target.async_client(socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
        return self._client

    async def get(self, key: str) -> tuple[bytes | None, bool]:
        if time.monotonic() < self._skip_until:
            return None, False
        try:
            return await self._redis().get(key), True
        except Exception as exc:  # any failure of the store is a miss, never the request's failure
            self._failed("get", exc)
            return None, False

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        if time.monotonic() < self._skip_until:
            return
        try:
            await self._redis().set(key, value, px=ttl_seconds * 1000)
        except Exception as exc:
            self._failed("set", exc)

    def _failed(self, operation: str, exc: Exception) -> None:
        ERRORS.labels(operation).inc()
        self._skip_until = time.monotonic() + self.retry_seconds
        self._log.event(
            f"cache:{type(exc).__name__}",
            f"response cache: Redis {operation} failed ({type(exc).__name__}); answering without the cache",
            level=logging.WARNING,
        )

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except Exception:  # closing a broken connection: nothing left to do
                logger.debug("response cache: closing the Redis client failed", exc_info=True)
