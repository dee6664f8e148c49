"""What a counter backend does: reserve a whole plan atomically, settle it afterwards."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal

from django.conf import settings

from apps.ratelimit.plan import Check, Refusal, usd_to_nano

log = logging.getLogger(__name__)

# Reads what the ledger already holds for (scope, scope_id, window_id) when a budget counter is missing.
Seeder = Callable[[str, str, str], Awaitable[Decimal]]


class BackendUnavailable(Exception):
    """The counter store is unusable; the caller applies ``RATELIMIT_FAIL_MODE``.

    ``reason`` (a small fixed set, used as a metric label): connect_error, connection_lost, stalled,
    breaker_open, error_reply, deadline, or unknown.
    """

    def __init__(self, message: str = "", *, reason: str = "unknown") -> None:
        super().__init__(message)
        self.reason = reason


class SeedNeeded(Exception):
    def __init__(self, indexes: list[int]) -> None:
        super().__init__(indexes)
        self.indexes = indexes


class CounterBackend:
    """Subclasses implement ``_reserve_once``, ``_settle`` and ``_seed``."""

    name = "base"

    def __init__(self, seeder: Seeder | None = None) -> None:
        self.seeder = seeder

    async def reserve(self, checks: list[Check]) -> Refusal | None:
        """Check every counter and charge all of them, or none. Returns the first refusal, if any.

        A missing budget counter (new window, or Redis lost its data) is first seeded from the ledger,
        so a restart of Redis never hands out a fresh budget.
        """
        for _ in range(3):
            try:
                return await self._reserve_once(checks)
            except SeedNeeded as need:
                for index in need.indexes:
                    check = checks[index]
                    value = await self._seed_value(check)
                    await self._seed(check, value)
        return await self._reserve_once(checks, allow_missing=True)

    async def settle(self, ops: list[tuple[Check, int]]) -> None:
        """Release slots and apply reconciliation deltas. ``ops`` pairs a reserved check with its delta."""
        if ops:
            await self._settle(ops)

    async def _seed_value(self, check: Check) -> int:
        if self.seeder is None or check.seed is None:
            return 0
        try:
            return usd_to_nano(await self.seeder(*check.seed))
        except Exception:
            # The ledger is a best-effort floor; the counter still works from zero.
            log.warning("budget seed failed for %s", check.key, exc_info=True)
            return 0

    async def _reserve_once(self, checks: list[Check], allow_missing: bool = False) -> Refusal | None:
        raise NotImplementedError

    async def _settle(self, ops: list[tuple[Check, int]]) -> None:
        raise NotImplementedError

    async def _seed(self, check: Check, value: int) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def _default_seeder() -> Seeder | None:
    try:
        from apps.spend.selectors import window_spent  # owned by the spend app; optional
    except ImportError:
        return None
    from asgiref.sync import sync_to_async

    from apps.ratelimit.lookups import with_fresh_connection

    async def seed(scope: str, scope_id: str, window_id: str) -> Decimal:
        # Once per scope and window (or after Redis lost its data), never per request.
        spent = sync_to_async(with_fresh_connection(window_spent), thread_sensitive=True)
        return await spent(scope, scope_id, window_id)

    return seed


_backend: CounterBackend | None = None


def get_backend() -> CounterBackend:
    """One backend per process (it holds the connection pool), chosen by ``settings.REDIS_URL``."""
    global _backend
    if _backend is None:
        if settings.REDIS_URL:
            from apps.ratelimit.backends.redis_backend import RedisBackend

            _backend = RedisBackend(
                settings.REDIS_URL, timeout_ms=settings.RATELIMIT_REDIS_TIMEOUT_MS, seeder=_default_seeder()
            )
        else:
            from apps.ratelimit.backends.memory import MemoryBackend

            _backend = MemoryBackend(seeder=_default_seeder())
    return _backend


def reset_backend(backend: CounterBackend | None = None) -> None:
    """Tests swap the process backend (e.g. to one pointed at a closed port)."""
    global _backend
    _backend = backend
