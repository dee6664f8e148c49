"""Counter backends: Redis (one Lua script, shared by every worker) and in-process memory (embedded default).

Both implement the same semantics, described in ``apps/ratelimit/plan.py``; the test suite runs every
limiter against both. ``get_backend()`` picks Redis when ``settings.REDIS_URL`` is set.
"""

from __future__ import annotations

from apps.ratelimit.backends.base import BackendUnavailable, CounterBackend, Seeder, get_backend, reset_backend

__all__ = ["BackendUnavailable", "CounterBackend", "Seeder", "get_backend", "reset_backend"]
