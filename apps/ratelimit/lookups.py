"""The limits the key context does not carry: customers (end users), per organization.

Deployment and model-group capacity are not looked up here: the proxy puts the deployment it picked and
the group the name resolved to on the request context (``RequestContext.deployment`` / ``.group``, from
its own registry), and the capacity limiters read them there.

Per organization, the proxy needs only the few customers that matter: those with a limit and those that
are blocked. Every other ``user`` value a client sends is unlimited, with no query, however many distinct
values arrive (the ``user`` field is client-chosen: it must never decide how much database work we do).
``CustomerLimits`` holds these snapshots for its owner, the limiter chain (one per gateway), loaded from
the database once and then served from memory.

A snapshot older than ``settings.AUTH_CACHE_TTL_SECONDS`` is served once more while one background
refresh runs. An admin change (the proxy's cache invalidation, ``MiddlewareChain.invalidate``) marks every
snapshot stale: the next request that needs one waits for a single reload, so a block or a new limit
applies from the first request after the proxy heard of the change. Only such reloads and cold misses wait
for the database (in a thread: the proxy is async end to end).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from django.db.models import Q

from apps.proxy.context import ScopeLimits
from apps.ratelimit import metrics
from apps.ratelimit.errors import CustomerBlockedError, LimiterUnavailableError
from apps.teams.models import Customer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CustomerSnapshot:
    """The customers of one organization the proxy must know about; everyone else is unlimited."""

    limits: dict[str, ScopeLimits]  # external id -> limits
    blocked: frozenset[str]  # external ids


_LIMIT_FIELDS = ("rpm_limit", "tpm_limit", "max_parallel_requests", "max_budget")


def _load_customers(organization_id: int, time_zone: str) -> CustomerSnapshot:
    """One query: the organization's customers with an enforced limit or a block (usually a handful)."""
    matters = Q(blocked=True)
    for name in _LIMIT_FIELDS:
        matters |= Q(**{f"{name}__isnull": False})
    limits: dict[str, ScopeLimits] = {}
    blocked: set[str] = set()
    rows = Customer.objects.filter(matters, organization_id=organization_id).values(
        "id", "external_id", "blocked", *_LIMIT_FIELDS, "soft_budget", "budget_duration"
    )
    for row in rows:
        if row["blocked"]:
            blocked.add(row["external_id"])
            continue
        # Scope id = the Customer pk, as the spend ledger keys customer budgets (apps/spend/scopes.py), so a
        # lost budget counter is seeded from the right BudgetWindow; windows in the organization's zone.
        limits[row["external_id"]] = ScopeLimits(
            scope="customer",
            id=str(row["id"]),
            rpm_limit=row["rpm_limit"],
            tpm_limit=row["tpm_limit"],
            max_parallel_requests=row["max_parallel_requests"],
            max_budget=row["max_budget"],
            soft_budget=row["soft_budget"],
            budget_duration=row["budget_duration"] or "",
            time_zone=time_zone,
        )
    return CustomerSnapshot(limits, frozenset(blocked))


def with_fresh_connection(loader: Callable[..., Any]) -> Callable[..., Any]:
    """Fresh connection per load, closed afterwards (no request cycle closes it on the proxy's side)."""

    def run(*args: Any) -> Any:
        close_old_connections()
        try:
            return loader(*args)
        finally:
            close_old_connections()

    return run


class _Cached:
    """Snapshots by key: TTL-expired ones are served while one background refresh runs; stale ones
    (an admin change happened) are reloaded before use, once for all the requests waiting on them."""

    def __init__(self, unknown: Any) -> None:
        # What a cold miss yields when the database does not answer and fail mode is "open".
        self.unknown = unknown
        self.entries: dict[Any, tuple[float, Any]] = {}
        self.stale: set[Any] = set()
        self.loads: dict[Any, asyncio.Task] = {}
        # Bumped by every admin change: a load that started before the change cannot make a key fresh.
        self.generation = 0

    async def get(self, key: Any, loader: Callable[..., Any], *args: Any) -> Any:
        entry = self.entries.get(key)
        if entry is not None and key not in self.stale:
            if entry[0] <= time.monotonic() and key not in self.loads:
                self._start(key, loader, args)
            return entry[1]
        task = self.loads.get(key) or self._start(key, loader, args)
        # Shielded: a client walking away must not cancel the load other requests are waiting for.
        loaded, value = await asyncio.shield(task)
        if loaded:
            return value
        entry = self.entries.get(key)
        if entry is not None:  # the last good value (or "unknown" in fail mode open) for the next second
            return entry[1]
        raise LimiterUnavailableError() from value

    def _start(self, key: Any, loader: Callable[..., Any], args: tuple) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(self._load(key, loader, args, self.generation))
        self.loads[key] = task
        task.add_done_callback(lambda done: self.loads.pop(key) if self.loads.get(key) is done else None)
        return task

    async def _load(self, key: Any, loader: Callable[..., Any], args: tuple, generation: int) -> tuple[bool, Any]:
        try:
            value = await sync_to_async(with_fresh_connection(loader), thread_sensitive=True)(*args)
        except Exception as exc:
            # Never a 500 for a limit lookup: keep the last good value, else follow the fail mode; retry in 1 s.
            metrics.backend_error(settings.RATELIMIT_FAIL_MODE, "lookup")
            log.warning("limits lookup failed (%s); fail mode %s", exc.__class__.__name__, settings.RATELIMIT_FAIL_MODE)
            previous = self.entries.get(key)
            if previous is not None:
                self.entries[key] = (time.monotonic() + 1.0, previous[1])
                self.stale.discard(key)
            elif settings.RATELIMIT_FAIL_MODE == "open":
                self.entries[key] = (time.monotonic() + 1.0, self.unknown)
            return False, exc
        if generation == self.generation:
            self.entries[key] = (time.monotonic() + settings.AUTH_CACHE_TTL_SECONDS, value)
            self.stale.discard(key)
        elif key not in self.entries:  # loaded before a change: usable once, reloaded on the next read
            self.entries[key] = (time.monotonic(), value)
            self.stale.add(key)
        return True, value

    def expire(self) -> None:
        """An admin change: every snapshot is reloaded before its next use (loads in flight do not count)."""
        self.generation += 1
        self.stale.update(self.entries)
        self.loads.clear()


class CustomerLimits:
    """The end users' limits and blocks, per organization; one per limiter chain (its owner's lifetime)."""

    def __init__(self) -> None:
        self._snapshots = _Cached(unknown=CustomerSnapshot({}, frozenset()))

    async def limits(
        self, organization_id: int | None, external_id: str | None, time_zone: str = "UTC"
    ) -> ScopeLimits | None:
        """The end user's limits (``Customer`` row of the key's organization), or None when unlimited/unknown.

        Raises ``CustomerBlockedError`` (403) when the organization blocked this end user. Budget windows of a
        customer follow the organization's time zone (``KeyContext.time_zone``), like every other scope.
        """
        if not organization_id or not external_id:
            return None
        snapshot: CustomerSnapshot = await self._snapshots.get(
            (organization_id, time_zone), _load_customers, organization_id, time_zone
        )
        if external_id in snapshot.blocked:
            raise CustomerBlockedError(external_id)
        return snapshot.limits.get(external_id)

    def expire(self) -> None:
        """Something changed in the admin: reload every snapshot before its next use."""
        self._snapshots.expire()
