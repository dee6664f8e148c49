"""What a counter backend does: reserve a whole plan atomically, settle it afterwards."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal

from django.conf import settings

from apps.ratelimit.plan import SLOTS, Check, Refusal, usd_to_nano

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
    """Subclasses implement ``_reserve_once``, ``_settle``, ``_seed`` and ``_renew``.

    Concurrency slots are leases (``RATELIMIT_SLOT_TTL_SECONDS``, 20 s by default): the backend remembers
    the slots its own requests hold and one background task renews all of them in one call every
    ``renew_seconds``, so a request of any length keeps its slot while a worker that died (SIGKILL, OOM)
    gives its slots back within one lease, reclaimed by the next reservation.
    """

    name = "base"

    def __init__(self, seeder: Seeder | None = None, renew_seconds: float | None = None) -> None:
        self.seeder = seeder
        self.renew_seconds = settings.RATELIMIT_SLOT_RENEW_SECONDS if renew_seconds is None else renew_seconds
        # (slot counter key, member) -> lease ms, for every slot a request of this process holds now.
        self.leases: dict[tuple[str, str], int] = {}
        self._renewer: asyncio.Task | None = None
        self._last_renew_warning = 0.0

    async def reserve(self, checks: list[Check]) -> Refusal | None:
        """Check every counter and charge all of them, or none. Returns the first refusal, if any.

        A missing budget counter (new window, or Redis lost its data) is first seeded from the ledger,
        so a restart of Redis never hands out a fresh budget.
        """
        refusal = await self._reserve_seeded(checks)
        if refusal is None:
            self._hold_leases(checks)
        return refusal

    async def _reserve_seeded(self, checks: list[Check]) -> Refusal | None:
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
        """Release slots and apply reconciliation deltas. ``ops`` pairs a reserved check with its delta.

        A released slot stops being renewed first: should the release itself fail, its lease still ends.
        """
        if ops:
            for check, _delta in ops:
                if check.kind == SLOTS:
                    self.leases.pop((check.key, check.member), None)
            await self._settle(ops)

    # --- slot leases ---------------------------------------------------------------------------
    def _hold_leases(self, checks: list[Check]) -> None:
        held = False
        for check in checks:
            if check.kind == SLOTS and not check.check_only:
                self.leases[(check.key, check.member)] = check.ttl_ms
                held = True
        if held:
            self._ensure_renewer()

    def _ensure_renewer(self) -> None:
        """One renewal task per process (per event loop: tests run one loop each), alive while leases are."""
        loop = asyncio.get_running_loop()
        task = self._renewer
        if task is None or task.done() or task.get_loop() is not loop:
            self._renewer = loop.create_task(self._renew_while_held(), name="slot-lease-renewal")

    async def _renew_while_held(self) -> None:
        while self.leases:
            await asyncio.sleep(self.renew_seconds)
            await self.renew_leases()

    async def renew_leases(self) -> None:
        """Extend every lease this process holds, in one backend call; never raises (it runs in the background)."""
        held = list(self.leases.items())
        if not held:
            return
        try:
            lost = await self._renew(held)
        except BackendUnavailable as exc:
            # The leases run on; the next round (a quarter of a lease later by default) tries again.
            self._warn_renewal(f"slot lease renewal failed ({exc.__class__.__name__}); {len(held)} leases")
            return
        except Exception:
            log.exception("slot lease renewal failed")
            return
        # A lease released while the renewal was on its way is no loss; one that expired before it is:
        # its worker's loop stalled longer than a lease and the slot may already serve another request.
        gone = [held[i][0] for i in lost if held[i][0] in self.leases]
        for lease in gone:
            del self.leases[lease]
        if gone:
            self._warn_renewal(f"{len(gone)} slot leases expired before their renewal (event loop stalled?)")

    def _warn_renewal(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_renew_warning > 10.0:
            self._last_renew_warning = now
            log.warning(message)

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

    async def _renew(self, leases: list[tuple[tuple[str, str], int]]) -> list[int]:
        """Extend each ((key, member), lease ms) still held; returns the indexes of those no longer held."""
        raise NotImplementedError

    async def close(self) -> None:
        return None
