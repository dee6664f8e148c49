"""Limits the key context does not carry: customers (end users), deployment capacity, model-group capacity.

Cached per worker with ``settings.AUTH_CACHE_TTL_SECONDS``; an expired entry is served once more while a
single background refresh runs, so the steady state does no ORM work on the request path. Only a cold
miss waits for the database (in a thread: the proxy is async end to end).
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
from apps.ratelimit.errors import LimiterUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeploymentCapacity:
    deployment_id: int
    model_name: str  # the model group this deployment belongs to
    rpm_limit: int | None
    tpm_limit: int | None
    max_parallel_requests: int | None


@dataclass(frozen=True, slots=True)
class GroupCapacity:
    model_name: str
    rpm_capacity: int | None
    tpm_capacity: int | None


@dataclass(frozen=True, slots=True)
class Registry:
    deployments: dict[int, DeploymentCapacity]
    groups: dict[str, GroupCapacity]


def _load_registry() -> Registry:
    from apps.proxy.models import ModelDeployment, ModelGroup

    deployments: dict[int, DeploymentCapacity] = {}
    sums: dict[str, list[int | None]] = {}
    for row in ModelDeployment.objects.filter(enabled=True).values(
        "id", "model_name", "rpm_limit", "tpm_limit", "max_parallel_requests"
    ):
        deployments[row["id"]] = DeploymentCapacity(
            row["id"], row["model_name"], row["rpm_limit"], row["tpm_limit"], row["max_parallel_requests"]
        )
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


def _load_customer(organization_id: int, external_id: str, time_zone: str) -> ScopeLimits | None:
    from apps.teams.models import Customer

    row = (
        Customer.objects.filter(organization_id=organization_id, external_id=external_id)
        .values("id", "rpm_limit", "tpm_limit", "max_parallel_requests", "max_budget", "soft_budget", "budget_duration")
        .first()
    )
    if row is None:
        return None
    limits = {k: row[k] for k in ("rpm_limit", "tpm_limit", "max_parallel_requests", "max_budget", "soft_budget")}
    if all(v is None for v in limits.values()):
        return None
    # The same scope id the spend ledger uses for customers (apps/spend/scopes.customer_scope_id).
    return ScopeLimits(
        scope="customer",
        id=f"{organization_id}:{external_id}",
        budget_duration=row["budget_duration"] or "",
        time_zone=time_zone,
        **limits,
    )


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
    """A value with a TTL; stale values are served while one refresh runs in the background."""

    def __init__(self, unknown: Any) -> None:
        # What a cold miss yields when the database does not answer and fail mode is "open".
        self.unknown = unknown
        self.entries: dict[Any, tuple[float, Any]] = {}
        self.refreshing: set[Any] = set()
        self.tasks: set[asyncio.Task] = set()

    async def get(self, key: Any, loader: Callable[..., Any], *args: Any) -> Any:
        entry = self.entries.get(key)
        now = time.monotonic()
        if entry is not None:
            if entry[0] <= now and key not in self.refreshing:
                self.refreshing.add(key)
                task = asyncio.get_running_loop().create_task(self._refresh(key, loader, *args))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            return entry[1]
        try:
            value = await sync_to_async(with_fresh_connection(loader), thread_sensitive=True)(*args)
        except Exception as exc:
            # Never a 500 for a limit lookup: follow the limiter's fail mode, retry in a second.
            metrics.backend_error(settings.RATELIMIT_FAIL_MODE, "lookup")
            log.warning("limits lookup failed (%s); fail mode %s", exc.__class__.__name__, settings.RATELIMIT_FAIL_MODE)
            if settings.RATELIMIT_FAIL_MODE == "closed":
                raise LimiterUnavailableError() from exc
            self.entries[key] = (time.monotonic() + 1.0, self.unknown)
            return self.unknown
        self.entries[key] = (time.monotonic() + settings.AUTH_CACHE_TTL_SECONDS, value)
        return value

    async def _refresh(self, key: Any, loader: Callable[..., Any], *args: Any) -> None:
        try:
            value = await sync_to_async(with_fresh_connection(loader), thread_sensitive=True)(*args)
            self.entries[key] = (time.monotonic() + settings.AUTH_CACHE_TTL_SECONDS, value)
        except Exception:
            log.warning("limits cache refresh failed; serving the previous value", exc_info=True)
            self.entries[key] = (time.monotonic() + 1.0, self.entries[key][1])
        finally:
            self.refreshing.discard(key)

    def refresh_soon(self, key: Any, min_age: float = 1.0) -> None:
        """Expire ``key`` now if it was loaded over ``min_age`` ago: the next read refreshes it in the background."""
        entry = self.entries.get(key)
        if entry is not None:
            loaded_at = entry[0] - settings.AUTH_CACHE_TTL_SECONDS
            if time.monotonic() - loaded_at > min_age:
                self.entries[key] = (time.monotonic(), entry[1])

    def clear(self) -> None:
        self.entries.clear()


_registry = _Cached(unknown=Registry({}, {}))
_customers = _Cached(unknown=None)
MAX_CUSTOMER_ENTRIES = 50_000


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

    Budget windows of a customer follow the organization's time zone, like every other scope.
    """
    if not organization_id or not external_id or len(external_id) > 255:
        return None
    if len(_customers.entries) > MAX_CUSTOMER_ENTRIES:
        _customers.clear()  # bounded memory under many distinct end users
    key = (organization_id, external_id, time_zone)
    return await _customers.get(key, _load_customer, organization_id, external_id, time_zone)


def lookups_expire() -> None:
    """Something changed in the admin (the proxy's cache invalidation): refresh every entry on next use.

    Entries are served once more while the refresh runs, so no request waits for the database.
    """
    now = time.monotonic()
    for cache in (_registry, _customers):
        cache.entries = {key: (now, value) for key, (_, value) in cache.entries.items()}


def lookups_clear() -> None:
    """Forget cached limits (tests; an admin change is otherwise picked up within the TTL)."""
    _registry.clear()
    _customers.clear()
