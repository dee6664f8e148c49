"""In-process counters for the embedded default (no REDIS_URL): one worker, same semantics as Redis.

Everything runs synchronously between awaits, so a whole plan is checked and charged atomically
within the event loop without a lock.
"""

from __future__ import annotations

import time

from apps.ratelimit.backends.base import CounterBackend, Seeder, SeedNeeded
from apps.ratelimit.plan import COUNTER, SLOTS, WINDOW, Check, Refusal


class MemoryBackend(CounterBackend):
    name = "memory"

    def __init__(self, seeder: Seeder | None = None, clock=time.time) -> None:
        super().__init__(seeder)
        self.clock = clock
        self.windows: dict[str, dict[int, int]] = {}
        self.slots: dict[str, dict[str, int]] = {}
        self.counters: dict[str, tuple[int, int]] = {}  # key -> (value, expires_at_ms or 0)
        self._ops = 0
        self.longest_window_ms = 60_000
        self.bucket_ms: dict[str, int] = {}

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _counter(self, key: str, now: int) -> int | None:
        entry = self.counters.get(key)
        if entry is None:
            return None
        if entry[1] and entry[1] <= now:
            del self.counters[key]
            return None
        return entry[0]

    def _window_used(self, check: Check, now: int) -> tuple[int, list[tuple[int, int]]]:
        buckets = self.windows.get(check.key, {})
        nb = check.window_ms // check.bucket_ms + 1
        current = now // check.bucket_ms
        alive = sorted((b, v) for b, v in buckets.items() if b > current - nb)
        return sum(v for _, v in alive), alive

    async def _reserve_once(self, checks: list[Check], allow_missing: bool = False) -> Refusal | None:
        now = self._now_ms()
        self._maybe_sweep(now)
        missing = [
            i
            for i, c in enumerate(checks)
            if c.kind == COUNTER and c.seed is not None and self._counter(c.key, now) is None
        ]
        if missing and not allow_missing:
            raise SeedNeeded(missing)
        used_by_check: list[int] = []
        for index, check in enumerate(checks):
            if check.kind == WINDOW:
                used, alive = self._window_used(check, now)
                if check.limit is not None and used + check.amount > check.limit:
                    return Refusal(index, _window_retry_ms(check, now, used, alive), used)
                check.reset_ms = _window_reset_ms(check, now, alive)
            elif check.kind == SLOTS:
                members = self.slots.setdefault(check.key, {})
                for member, expiry in list(members.items()):
                    if expiry <= now:
                        del members[member]
                used = len(members)
                if check.limit is not None and used + 1 > check.limit:
                    # The earliest lease expiry, as the Lua script (the lease itself when nobody holds one).
                    retry = min(members.values()) - now if members else check.ttl_ms
                    return Refusal(index, max(retry, 1), used)
            else:
                used = self._counter(check.key, now) or 0
                if check.limit is not None and used + check.amount > check.limit:
                    return Refusal(index, self._counter_retry_ms(check, now), used)
            used_by_check.append(used)
        for check, used in zip(checks, used_by_check, strict=True):
            amount = 1 if check.kind == SLOTS else check.amount
            if check.limit is not None:
                check.remaining = check.limit - used - (0 if check.check_only else amount)
            if check.check_only:
                continue
            if check.kind == WINDOW:
                bucket = now // check.bucket_ms
                check.bucket = bucket
                self.bucket_ms[check.key] = check.bucket_ms
                self.longest_window_ms = max(self.longest_window_ms, check.window_ms)
                buckets = self.windows.setdefault(check.key, {})
                buckets[bucket] = buckets.get(bucket, 0) + check.amount
                first_alive = bucket - check.window_ms // check.bucket_ms
                for stale in [b for b in buckets if b < first_alive]:  # as the Lua script's HDEL
                    del buckets[stale]
            elif check.kind == SLOTS:
                self.slots.setdefault(check.key, {})[check.member] = now + check.ttl_ms
            else:
                current = self._counter(check.key, now)
                if current is None:  # the expiry is set when the counter is created, as in Redis
                    expires = now + check.ttl_ms if check.ttl_ms > 0 else 0
                    self.counters[check.key] = (check.amount, expires)
                else:
                    self.counters[check.key] = (current + check.amount, self.counters[check.key][1])
        return None

    def _counter_retry_ms(self, check: Check, now: int) -> int:
        if check.retry_ms >= 0:
            return check.retry_ms
        expires = self.counters.get(check.key, (0, 0))[1]
        return max(1000, expires - now) if expires else 1000

    async def _settle(self, ops: list[tuple[Check, int]]) -> None:
        now = self._now_ms()
        for check, delta in ops:
            if check.kind == SLOTS:
                self.slots.get(check.key, {}).pop(check.member, None)
            elif check.kind == WINDOW:
                buckets = self.windows.get(check.key)
                if buckets is not None and check.bucket in buckets:
                    buckets[check.bucket] += delta
            else:
                entry = self.counters.get(check.key)
                if entry is not None and self._counter(check.key, now) is not None:
                    self.counters[check.key] = (entry[0] + delta, entry[1])

    async def _renew(self, leases: list[tuple[tuple[str, str], int]]) -> list[int]:
        now = self._now_ms()
        lost = []
        for index, ((key, member), ttl_ms) in enumerate(leases):
            members = self.slots.get(key, {})
            if members.get(member, 0) > now:
                members[member] = now + ttl_ms
            else:  # released meanwhile, or expired (as the Lua script: an expired lease is never revived)
                lost.append(index)
        return lost

    async def _seed(self, check: Check, value: int) -> None:
        now = self._now_ms()
        if self._counter(check.key, now) is None:
            self.counters[check.key] = (value, now + check.ttl_ms if check.ttl_ms > 0 else 0)

    def _maybe_sweep(self, now: int) -> None:
        """Drop dead buckets and counters now and then so memory stays bounded by live traffic."""
        self._ops += 1
        if self._ops % 1024:
            return
        horizon = now - self.longest_window_ms - 2_000  # older than any window: nobody reads it again
        for key in list(self.windows):
            buckets = self.windows[key]
            bucket_ms = self.bucket_ms.get(key, 1000)
            for bucket in [b for b in buckets if (b + 1) * bucket_ms < horizon]:
                del buckets[bucket]
            if not buckets:
                del self.windows[key]
                self.bucket_ms.pop(key, None)
        for key in [k for k, members in self.slots.items() if not members]:
            del self.slots[key]
        for key in list(self.counters):
            self._counter(key, now)


def _window_retry_ms(check: Check, now: int, used: int, alive: list[tuple[int, int]]) -> int:
    """Time until enough old buckets leave the window for this request to fit."""
    nb = check.window_ms // check.bucket_ms + 1
    limit = check.limit or 0
    freed = 0
    for bucket, value in alive:
        freed += value
        if used - freed + check.amount <= limit:
            return max(1, (bucket + nb) * check.bucket_ms - now)
    return check.window_ms


def _window_reset_ms(check: Check, now: int, alive: list[tuple[int, int]]) -> int:
    """When the oldest charge in the window (this request's, if the window was empty) leaves it."""
    nb = check.window_ms // check.bucket_ms + 1
    oldest = alive[0][0] if alive else now // check.bucket_ms
    return max(0, (oldest + nb) * check.bucket_ms - now)
