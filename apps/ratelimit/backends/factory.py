"""The one place a counter backend is built from settings: Redis when ``settings.REDIS_TARGET`` is set (a
``ClusterBackend`` when it is a cluster), else memory.

Whoever owns a backend calls ``backend_from_settings()`` once and keeps it: the limiter chain the gateway
builds at startup (``apps.ratelimit.chain.build_chain``), or a management command or Celery task that needs
counters outside the proxy. There is no process-wide instance: a backend lives as long as its owner.
"""

from __future__ import annotations

from decimal import Decimal

from asgiref.sync import sync_to_async
from django.conf import settings

from apps.ratelimit.backends.base import CounterBackend, Seeder
from apps.ratelimit.backends.cluster_backend import ClusterBackend
from apps.ratelimit.backends.memory import MemoryBackend
from apps.ratelimit.backends.redis_backend import RedisBackend
from apps.ratelimit.lookups import with_fresh_connection
from apps.spend.selectors import window_spent


def ledger_seeder() -> Seeder:
    """Reads what the spend ledger holds for a budget whose counter is missing (new window, Redis lost it)."""
    spent = sync_to_async(with_fresh_connection(window_spent), thread_sensitive=True)

    async def seed(scope: str, scope_id: str, window_id: str) -> Decimal:
        # Once per scope and window (or after Redis lost its data), never per request.
        return await spent(scope, scope_id, window_id)

    return seed


def backend_from_settings() -> CounterBackend:
    """A new backend (it holds its own connection pool), chosen by ``settings.REDIS_TARGET``."""
    target = settings.REDIS_TARGET
    if target is not None and target.is_cluster:
        return ClusterBackend(
            list(target.cluster_nodes),
            timeout_ms=settings.RATELIMIT_REDIS_TIMEOUT_MS,
            seeder=ledger_seeder(),
            username=target.username or "",
            password=target.password or "",
            tls=target.tls,
        )
    if target is not None:
        return RedisBackend(
            settings.REDIS_TARGET, timeout_ms=settings.RATELIMIT_REDIS_TIMEOUT_MS, seeder=ledger_seeder()
        )
    return MemoryBackend(seeder=ledger_seeder())
