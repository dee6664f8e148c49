"""Counter backends: Redis (one Lua script, shared by every worker) and in-process memory (embedded default).

Both implement the same semantics, described in ``apps/ratelimit/plan.py``; the test suite runs every
limiter against both. ``factory.backend_from_settings()`` builds the one settings ask for (Redis when
``settings.REDIS_TARGET`` is set); its owner (the limiter chain) keeps it.
"""

from __future__ import annotations

from apps.ratelimit.backends.base import BackendUnavailable, CounterBackend, Seeder

__all__ = ["BackendUnavailable", "CounterBackend", "Seeder"]
