"""Per-source limits on key lookups, so a flood of unknown keys never delays anybody else's first request.

A key the auth cache does not hold costs a database lookup. A client that sends random keys (a scanner, a
misconfigured job, an attack) would fill the proxy's database threads, and a legitimate key presented for
the first time would queue behind thousands of doomed lookups. So, per source (the client address):

- a token bucket of *misses*: every lookup takes a token, a lookup that finds a working key gives it back,
  so only unknown, revoked or expired keys use the bucket up (``AUTH_MISS_BURST`` at once, refilled at
  ``AUTH_MISS_RATE_PER_SECOND``). Past it the source gets a 429 with ``retry-after`` (scope ``client``)
  without any database work. A 429, not a 401: a working key behind the same address (NAT) must not be
  told it is wrong, and the answer says nothing about whether the key exists.
- at most ``AUTH_LOOKUPS_PER_SOURCE`` of its lookups run at a time (more wait their turn), so one source
  never holds more than that many places in the database threads' queue. A lookup is charged when its
  turn comes, after the source's earlier lookups gave back what they found: fifty new working keys at
  once from one address (a restarted worker behind a NAT) use up nothing.

Per worker and in memory: nothing on this path waits for Redis. Keys already in the cache (the steady
state) never get here.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from ipaddress import ip_address

from apps.ratelimit.errors import ProxyRateLimitError

MAX_SOURCES = 100_000


def client_address(peer: tuple | list | None, forwarded_for: bytes | None, trusted_proxies: int) -> str:
    """The client's address, as ``apps.teams.client_ip``: the socket peer, or with ``trusted_proxies`` = n
    the n-th ``X-Forwarded-For`` entry from the right (the ones our own proxies appended)."""
    remote = str(peer[0]) if peer else ""
    if trusted_proxies <= 0 or not forwarded_for:
        return remote
    hops = [hop.strip() for hop in forwarded_for.decode("latin-1").split(",") if hop.strip()]
    candidate = hops[-trusted_proxies] if len(hops) >= trusted_proxies else (hops[0] if hops else "")
    try:
        return str(ip_address(candidate))
    except ValueError:
        return remote


class AuthMissGuard:
    def __init__(self, *, rate: float, burst: int, lookups_per_source: int, clock=time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.lookups_per_source = max(1, lookups_per_source)
        self.clock = clock
        self._buckets: dict[str, list[float]] = {}  # source -> [tokens, as of]
        self._lookups: dict[str, list] = {}  # source -> [semaphore, users]

    def charge(self, source: str) -> None:
        """Take one token for a lookup, or raise the 429 that says when the next one is there."""
        now = self.clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= MAX_SOURCES:
                self._forget_idle(now)
            bucket = self._buckets[source] = [float(self.burst), now]
        tokens = min(float(self.burst), bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            wait = (1.0 - tokens) / self.rate if self.rate > 0 else 3600.0
            raise ProxyRateLimitError(
                f"Too many requests with unknown API keys from this address. Retry after {max(1, round(wait))} s.",
                limit_type="requests",
                scope="client",
                retry_after=wait,
            )
        bucket[0] = tokens - 1.0

    def refund(self, source: str) -> None:
        """The lookup found a working key (or failed on our side): it was no miss."""
        bucket = self._buckets.get(source)
        if bucket is not None:
            bucket[0] = min(float(self.burst), bucket[0] + 1.0)

    @asynccontextmanager
    async def lookup(self, source: str):
        """Hold one of the source's lookup places while its lookup runs."""
        entry = self._lookups.get(source)
        if entry is None:
            entry = self._lookups[source] = [asyncio.Semaphore(self.lookups_per_source), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                self._lookups.pop(source, None)

    def _forget_idle(self, now: float) -> None:
        """Drop sources whose bucket is full again (they lose nothing); if that frees nothing, start over."""
        full = [s for s, (tokens, since) in self._buckets.items() if tokens + (now - since) * self.rate >= self.burst]
        for source in full:
            del self._buckets[source]
        if len(self._buckets) >= MAX_SOURCES:
            self._buckets.clear()
