"""Counters in Redis, shared by every worker and machine: one EVALSHA reserves a whole plan.

Every call is bounded by ``timeout_ms`` (settings.RATELIMIT_REDIS_TIMEOUT_MS) and never retried: a slow
or dead Redis raises ``BackendUnavailable`` and the engine applies the fail mode. After a failure the
backend stays "down" for a short back-off, so a dead Redis costs requests nothing but the fail mode.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from apps.ratelimit.backends.base import BackendUnavailable, CounterBackend, Seeder, SeedNeeded
from apps.ratelimit.backends.lua import RESERVE, SETTLE
from apps.ratelimit.plan import SLOTS, WINDOW, Check, Refusal

_KIND = {WINDOW: "w", SLOTS: "s"}
DOWN_BACKOFF_SECONDS = 0.5


def _fields(check: Check) -> str:
    kind = _KIND.get(check.kind, "c")
    limit = -1 if check.limit is None else int(check.limit)
    if kind == "w":
        p1, p2 = check.window_ms, check.bucket_ms
    elif kind == "s":
        p1, p2 = check.ttl_ms, check.member.replace("|", "_") or "-"
    else:
        p1, p2 = check.ttl_ms, check.retry_ms
    return f"{kind}|{limit}|{int(check.amount)}|{p1}|{p2}|{int(check.check_only)}|{int(check.seed is not None)}"


class RedisBackend(CounterBackend):
    name = "redis"

    def __init__(self, url: str, *, timeout_ms: int = 50, seeder: Seeder | None = None) -> None:
        super().__init__(seeder)
        self.url = url
        self.timeout = timeout_ms / 1000.0
        self._client: aioredis.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down_until = 0.0

    def _redis(self) -> aioredis.Redis:
        # A pool belongs to the event loop it was created on (tests run one loop per test).
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = aioredis.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
                health_check_interval=0,
            )
            self._reserve = self._client.register_script(RESERVE)
            self._settle_script = self._client.register_script(SETTLE)
            self._loop = loop
        return self._client

    async def _call(self, operation):
        if time.monotonic() < self._down_until:
            raise BackendUnavailable("redis marked down")
        try:
            async with asyncio.timeout(self.timeout):
                return await operation()
        except (TimeoutError, RedisError, OSError) as exc:
            self._down_until = time.monotonic() + DOWN_BACKOFF_SECONDS
            raise BackendUnavailable(str(exc)) from exc

    async def _reserve_once(self, checks: list[Check], allow_missing: bool = False) -> Refusal | None:
        self._redis()
        keys = [check.key for check in checks]
        argv = ["1" if allow_missing else "0", "|".join(_fields(check) for check in checks)]
        reply = (await self._call(lambda: self._reserve(keys=keys, args=argv))).split(b"|")
        status = int(reply[0])
        if status == -1:
            raise SeedNeeded([int(i) - 1 for i in reply[1:]])
        if status == 0:
            return Refusal(int(reply[1]) - 1, int(reply[2]), float(reply[3]))
        for index, check in enumerate(checks):
            base = 1 + index * 3
            used = int(reply[base])
            if check.limit is not None:
                amount = 1 if check.kind == SLOTS else check.amount
                check.remaining = check.limit - used - (0 if check.check_only else amount)
            check.reset_ms = int(reply[base + 1])
            check.bucket = int(reply[base + 2])
        return None

    async def _settle(self, ops: list[tuple[Check, int]]) -> None:
        self._redis()
        keys: list[str] = []
        fields: list[str] = []
        for check, delta in ops:
            kind = _KIND.get(check.kind, "c")
            keys.append(check.key)
            target = (check.member.replace("|", "_") or "-") if kind == "s" else str(check.bucket or 0)
            fields.append(f"{kind}|{int(delta)}|{target}")
        packed = "|".join(fields)
        await self._call(lambda: self._settle_script(keys=keys, args=[packed]))

    async def _seed(self, check: Check, value: int) -> None:
        client = self._redis()
        if check.ttl_ms > 0:
            await self._call(lambda: client.set(check.key, value, nx=True, px=check.ttl_ms))
        else:
            await self._call(lambda: client.set(check.key, value, nx=True))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
