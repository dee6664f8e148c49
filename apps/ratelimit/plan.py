"""The per-request reservation plan: what every limiter wants checked, executed in one atomic step.

Each limiter's ``pre_call`` only *adds* checks to the request's plan; the chain then hands the whole plan
to the counter backend once (one Redis EVALSHA), which checks every scope and reserves all-or-nothing, so a
refused request consumes nothing. ``post_call`` settles the plan once (one round trip): concurrency slots
are released, reserved tokens and cost are reconciled to what the call really used.

Three counter kinds cover every limiter:

- ``window``: a sliding window of fixed buckets (a Redis hash ``bucket -> amount``). It keeps
  ``window / bucket + 1`` buckets, so no interval of ``window`` seconds ever holds more than the limit
  (exactly bounded, never the 2x burst of fixed windows). Used for RPM, TPM, capacity and priority tiers.
- ``slots``: concurrency slots, each a lease (a sorted set ``request_id -> lease expiry``). The worker
  serving the request renews its leases (one batched call per interval, see ``CounterBackend``); expired
  ones are dropped on every check, so a worker that died mid-request gives its slots back within
  ``RATELIMIT_SLOT_TTL_SECONDS``, and a refusal's retry-after is the earliest lease expiry.
- ``counter``: a plain running total with an expiry (budgets in nano-USD per window id, session caps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

WINDOW = "window"
SLOTS = "slots"
COUNTER = "counter"

# Budgets are counted in integer nano-USD so Redis INCRBY and Lua doubles stay exact up to ~9 million USD.
NANO = Decimal(1_000_000_000)

KEY_PREFIX = "gw:rl:"


# Lua numbers are doubles: counters stay exact below 2**53 nano-USD (about 9 million USD per window).
MAX_NANO = 2**53 - 1


def usd_to_nano(amount: Decimal | float | int | None) -> int:
    """Reservations round up so the cap is never crossed by rounding; larger values saturate."""
    if not amount:
        return 0
    return min(MAX_NANO, max(0, math.ceil(Decimal(str(amount)) * NANO)))


def nano_to_usd(amount: float | int) -> Decimal:
    return Decimal(int(amount)) / NANO


@dataclass(slots=True)
class Check:
    """One counter a request is checked and charged against.

    ``limit`` None means "count, never refuse" (e.g. a model group's traffic that the priority tiers read).
    ``check_only`` reads without charging (a priority tier looking at the group counter).
    ``reconcile`` says how ``post_call`` settles it: "tokens", "cost", "slot" or None (requests stay counted).
    """

    kind: str
    key: str
    limit: float | None
    amount: int
    limit_type: str
    scope: str
    label: str
    window_ms: int = 60_000
    bucket_ms: int = 1_000
    ttl_ms: int = 0
    # Counters: ms until the window ends (the honest retry-after); -1 means "until the key expires".
    retry_ms: int = -1
    member: str = ""
    check_only: bool = False
    # A model group's counter checked against the caller's priority tier (the refusal says so).
    priority_tier: bool = False
    reconcile: str | None = None
    # A budget counter missing in Redis is seeded from the ledger: (scope, scope_id, window_id).
    seed: tuple[str, str, str] | None = None
    unit: str = ""
    # Filled by the backend on success.
    remaining: float | None = None
    reset_ms: int | None = None
    bucket: int | None = None


@dataclass(slots=True)
class Refusal:
    index: int
    retry_ms: int
    used: float


@dataclass(slots=True)
class Plan:
    checks: list[Check] = field(default_factory=list)
    # Requests charged by this call (a batch charges its whole input file).
    units: int = 1
    # An accepted batch keeps its token and cost charges: the work happens upstream later, unreconciled.
    keep_charges: bool = False
    committed: bool = False
    settled: bool = False
    # The backend could not be reached and fail mode was "open": nothing reserved, nothing to settle.
    skipped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, check: Check) -> Check:
        if check.limit is not None and check.limit < 0:
            check.limit = 0
        self.checks.append(check)
        return check


def counter_key(tag: str, *parts: object) -> str:
    """Counter names carry ids only (never a raw key or a client string longer than the hash).

    ``tag`` is the Redis Cluster hash tag (``{o:12}``: organization 12): counters that one script must
    reserve together share it, so they share a slot (``apps/ratelimit/backends/cluster_backend.py``).
    A single Redis ignores it.
    """
    return f"{KEY_PREFIX}{{{tag}}}:" + ":".join(str(p) for p in parts)
