"""Counters in Redis, shared by every worker and machine: one EVALSHA reserves a whole plan.

Whether Redis is usable is the connection's verdict (``RespClient``: connect errors, resets, a stall
watchdog on the socket and a breaker), never a timer on the request: a reply that waits behind the
worker's own busy event loop is still counted. A stalled or unreachable Redis fails the call within
about ``timeout_ms`` (settings.RATELIMIT_REDIS_TIMEOUT_MS) and then at once while the breaker is open;
``BackendUnavailable.reason`` says why, and the engine applies the fail mode. Calls are never retried.
A last-resort deadline (``DEADLINE_FACTOR`` x the timeout, at least ``MIN_DEADLINE_SECONDS``) only guards
against a bug in that logic: requests never hang.
"""

from __future__ import annotations

import asyncio

from apps.common.redis_target import RedisTarget
from apps.ratelimit.backends.base import BackendUnavailable, CounterBackend, Seeder, SeedNeeded
from apps.ratelimit.backends.lua import RENEW, RESERVE, SETTLE
from apps.ratelimit.backends.resp import RespClient, RespError, RespUnavailable
from apps.ratelimit.plan import SLOTS, WINDOW, Check, Refusal

_KIND = {WINDOW: "w", SLOTS: "s"}
DEADLINE_FACTOR = 10
MIN_DEADLINE_SECONDS = 5.0


def _member(check: Check) -> str:
    return check.member.replace("|", "_") or "-"


def _fields(check: Check) -> str:
    kind = _KIND.get(check.kind, "c")
    limit = -1 if check.limit is None else int(check.limit)
    if kind == "w":
        p1, p2 = check.window_ms, check.bucket_ms
    elif kind == "s":
        p1, p2 = check.ttl_ms, _member(check)
    else:
        p1, p2 = check.ttl_ms, check.retry_ms
    return f"{kind}|{limit}|{int(check.amount)}|{p1}|{p2}|{int(check.check_only)}|{int(check.seed is not None)}"


class RedisBackend(CounterBackend):
    name = "redis"

    def __init__(
        self, target: RedisTarget | str | None, *, timeout_ms: int = 500, seeder: Seeder | None = None
    ) -> None:
        super().__init__(seeder)
        self.target = target  # None/"": a subclass builds its own client (ClusterBackend)
        self.timeout = timeout_ms / 1000.0
        self.deadline = max(self.timeout * DEADLINE_FACTOR, MIN_DEADLINE_SECONDS)
        self._client: RespClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _new_client(self) -> RespClient:
        return RespClient(self.target, stall_seconds=self.timeout)

    def _redis(self) -> RespClient:
        # A connection belongs to the event loop it was opened on (tests run one loop per test).
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            if self._client is not None and self._loop is not None and not self._loop.is_closed():
                self._client.close()
            self._client = self._new_client()
            self._loop = loop
        return self._client

    async def _call(self, operation):
        try:
            async with asyncio.timeout(self.deadline):
                return await operation()
        except RespUnavailable as exc:
            raise BackendUnavailable(str(exc), reason=exc.reason) from exc
        except RespError as exc:  # an error reply: -LOADING after a restart, -OOM, -BUSY
            raise BackendUnavailable(str(exc), reason="error_reply") from exc
        except TimeoutError as exc:
            raise BackendUnavailable(f"no answer within {self.deadline:.1f} s", reason="deadline") from exc
        except OSError as exc:
            raise BackendUnavailable(f"{exc.__class__.__name__}: {exc}", reason="connect_error") from exc

    async def _eval(self, script: str, keys: list[str], argv: list[str]) -> bytes:
        """One script call; the cluster backend routes it to the master of the keys' slot."""
        client = self._redis()
        return await self._call(lambda: client.evalsha(script, keys, argv))

    async def _execute(self, key: str, *args: object) -> object:
        client = self._redis()
        return await self._call(lambda: client.execute(*args))

    async def _reserve_once(self, checks: list[Check], allow_missing: bool = False) -> Refusal | None:
        keys = [check.key for check in checks]
        argv = ["1" if allow_missing else "0", "|".join(_fields(check) for check in checks)]
        reply = (await self._eval(RESERVE, keys, argv)).split(b"|")
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
        keys: list[str] = []
        fields: list[str] = []
        for check, delta in ops:
            kind = _KIND.get(check.kind, "c")
            keys.append(check.key)
            fields.append(f"{kind}|{int(delta)}|{_member(check) if kind == 's' else check.bucket or 0}")
        await self._eval(SETTLE, keys, ["|".join(fields)])

    async def _renew(self, leases: list[tuple[tuple[str, str], int]]) -> list[int]:
        keys = [key for (key, _member), _ttl in leases]
        packed = "|".join(f"{ttl}|{member.replace('|', '_') or '-'}" for (_key, member), ttl in leases)
        reply = await self._eval(RENEW, keys, [packed])
        return [int(i) - 1 for i in reply.split(b"|")[1:]]

    async def _seed(self, check: Check, value: int) -> None:
        expiry = ("PX", check.ttl_ms) if check.ttl_ms > 0 else ()
        await self._execute(check.key, "SET", check.key, value, "NX", *expiry)

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
