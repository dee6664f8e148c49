"""Limits the key context does not carry: customers (end users), deployment capacity, model-group capacity.

All of it is a per-worker snapshot, loaded from the database once and then served from memory:

* the deployment registry (capacities of every enabled deployment, group capacities), one for the process;
* per organization, the few customers that matter to the proxy: those with a limit and those that are
  blocked. Every other ``user`` value a client sends is unlimited, with no query, however many distinct
  values arrive (the ``user`` field is client-chosen: it must never decide how much database work we do).

A snapshot older than ``settings.AUTH_CACHE_TTL_SECONDS`` is served once more while one background
refresh runs. An admin change (the proxy's cache invalidation, ``lookups_expire``) marks every snapshot
stale: the next request that needs one waits for a single reload, so a block or a new limit applies from
the first request after the proxy heard of the change. Only such reloads and cold misses wait for the
database (in a thread: the proxy is async end to end).
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

from apps.proxy.context import ScopeLimits
from apps.ratelimit import metrics
from apps.ratelimit.errors import CustomerBlockedError, LimiterUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeploymentCapacity:
    deployment_id: int
    model_name: str  # the model group this deployment belongs to
    rpm_limit: int | None
    tpm_limit: int | None
    max_parallel_requests: int | None
    # Shared by every tenant (no organization). Only shared deployments make up a group's capacity.
    shared: bool = True


@dataclass(frozen=True, slots=True)
class GroupCapacity:
    model_name: str
    rpm_capacity: int | None
    tpm_capacity: int | None


@dataclass(frozen=True, slots=True)
class Registry:
    deployments: dict[int, DeploymentCapacity]
    groups: dict[str, GroupCapacity]


@dataclass(frozen=True, slots=True)
class CustomerSnapshot:
    """The customers of one organization the proxy must know about; everyone else is unlimited."""

    limits: dict[str, ScopeLimits]  # external id -> limits
    blocked: frozenset[str]  # external ids


def _load_registry() -> Registry:
    from apps.proxy.models import ModelDeployment, ModelGroup

    deployments: dict[int, DeploymentCapacity] = {}
    sums: dict[str, list[int | None]] = {}
    for row in ModelDeployment.objects.filter(enabled=True).values(
        "id", "model_name", "rpm_limit", "tpm_limit", "max_parallel_requests", "organization_id"
    ):
        shared = row["organization_id"] is None
        deployments[row["id"]] = DeploymentCapacity(
            row["id"], row["model_name"], row["rpm_limit"], row["tpm_limit"], row["max_parallel_requests"], shared
        )
        if not shared:
            # An organization's private deployment is its own business: it neither adds to nor (without a
            # declared limit) switches off the capacity every tenant shares.
            continue
        rpm, tpm = sums.setdefault(row["model_name"], [0, 0])
        # A group's capacity is the sum of its deployments' only when every deployment declares one.
        sums[row["model_name"]] = [
            None if rpm is None or row["rpm_limit"] is None else rpm + row["rpm_limit"],
            None if tpm is None or row["tpm_limit"] is None else tpm + row["tpm_limit"],
        ]
    groups = {name: GroupCapacity(name, rpm or None, tpm or None) for name, (rpm, tpm) in sums.items()}
    for row in ModelGroup.objects.values("model_name", "rpm_capacity", "tpm_capacity"):
        summed = groups.get(row["model_name"])
        groups[row["model_name"]] = GroupCapacity(
            row["model_name"],
            row["rpm_capacity"] or (summed.rpm_capacity if summed else None),
            row["tpm_capacity"] or (summed.tpm_capacity if summed else None),
        )
    return Registry(deployments, groups)


_LIMIT_FIELDS = ("rpm_limit", "tpm_limit", "max_parallel_requests", "max_budget")


def _load_customers(organization_id: int, time_zone: str) -> CustomerSnapshot:
    """One query: the organization's customers with an enforced limit or a block (usually a handful)."""
    from django.db.models import Q

    from apps.teams.models import Customer

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

    def refresh_soon(self, key: Any, min_age: float = 1.0) -> None:
        """Expire ``key`` now if it was loaded over ``min_age`` ago: the next read refreshes it in the background."""
        entry = self.entries.get(key)
        if entry is not None:
            loaded_at = entry[0] - settings.AUTH_CACHE_TTL_SECONDS
            if time.monotonic() - loaded_at > min_age:
                self.entries[key] = (time.monotonic(), entry[1])

    def expire(self) -> None:
        """An admin change: every snapshot is reloaded before its next use (loads in flight do not count)."""
        self.generation += 1
        self.stale.update(self.entries)
        self.loads.clear()

    def clear(self) -> None:
        self.entries.clear()
        self.stale.clear()
        self.loads.clear()
        self.generation += 1


_registry = _Cached(unknown=Registry({}, {}))
_customers = _Cached(unknown=CustomerSnapshot({}, frozenset()))


async def deployment_capacity(deployment_id: int | None) -> DeploymentCapacity | None:
    if deployment_id is None:
        return None
    registry: Registry = await _registry.get("registry", _load_registry)
    found = registry.deployments.get(deployment_id)
    if found is None:
        # A deployment added since the last load: pick it up within a second, not a whole TTL.
        _registry.refresh_soon("registry")
    return found


async def group_capacity(model_name: str) -> GroupCapacity | None:
    registry: Registry = await _registry.get("registry", _load_registry)
    return registry.groups.get(model_name)


async def customer_limits(
    organization_id: int | None, external_id: str | None, time_zone: str = "UTC"
) -> ScopeLimits | None:
    """The end user's limits (``Customer`` row of the key's organization), or None when unlimited/unknown.

    Raises ``CustomerBlockedError`` (403) when the organization blocked this end user. Budget windows of a
    customer follow the organization's time zone (``KeyContext.time_zone``), like every other scope.
    """
    if not organization_id or not external_id:
        return None
    snapshot: CustomerSnapshot = await _customers.get(
        (organization_id, time_zone), _load_customers, organization_id, time_zone
    )
    if external_id in snapshot.blocked:
        raise CustomerBlockedError(external_id)
    return snapshot.limits.get(external_id)


def lookups_expire() -> None:
    """Something changed in the admin (the proxy's cache invalidation): reload every snapshot before its next use."""
    _registry.expire()
    _customers.expire()


def lookups_clear() -> None:
    """Forget cached limits (tests; an admin change is otherwise picked up within the TTL)."""
    _registry.clear()
    _customers.clear()
