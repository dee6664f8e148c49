"""From a spend event to its ledger row: every value made to fit its column, never fatal to a batch.

A ``LedgerRow`` carries exactly ``SpendLog``'s column attributes (``deployment_id``, ``cost``, ...)
without being a model instance: building a Django model costs about as much as the rest of
ingestion together, and the insert paths (``apps.spend.ingest``) only read attributes.
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

import orjson

from apps.spend.events import SpendEvent
from apps.spend.models import SpendLog

logger = logging.getLogger(__name__)

_COST_FIELD = SpendLog._meta.get_field("cost")
_QUANTUM = Decimal(1).scaleb(-_COST_FIELD.decimal_places)
_MAX_COST = Decimal(10) ** (_COST_FIELD.max_digits - _COST_FIELD.decimal_places)
_MAX_INT = 2_147_483_647
_MAX_ID = 2**63 - 1
_HEX = frozenset("0123456789abcdef")

# SpendLog's columns as attributes (``deployment_id``, not ``deployment``), the primary key aside.
LEDGER_ATTRIBUTES = tuple(f.attname for f in SpendLog._meta.concrete_fields if not f.primary_key)


class LedgerRow:
    """One ledger row's values, already clamped to their columns (see ``ledger_row``)."""

    __slots__ = LEDGER_ATTRIBUTES

    def __init__(self, **values: object) -> None:
        for name, value in values.items():
            setattr(self, name, value)


def event_cost(event: SpendEvent, field: str = "cost") -> Decimal:
    """The event's cost (or ``cost_saved``) as the ledger stores it (quantized to the column's places; bad
    values are 0)."""
    value = getattr(event, field)
    try:
        cost = Decimal(str(value))
    except (InvalidOperation, ValueError):
        logger.error("spend: request %s has an unreadable %s %r; recorded as 0", event.request_id, field, value)
        return Decimal(0)
    if not cost.is_finite() or cost < 0 or cost >= _MAX_COST:
        logger.error("spend: request %s has an impossible %s %s; recorded as 0", event.request_id, field, cost)
        return Decimal(0)
    return cost.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)


def event_time(event: SpendEvent) -> datetime | None:
    """When the event says its request finished, or None when that is unreadable."""
    try:
        return datetime.fromtimestamp(float(event.created_at), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _finished_at(event: SpendEvent) -> datetime:
    # The stream reader replaces an unreadable time by its entry's (apps.spend.stream): the same value on
    # every redelivery, as UNIQUE(request_id, created_at) needs. Only in-process events get "now" here.
    return event_time(event) or datetime.now(tz=UTC)


def _text(value: object, limit: int) -> str:
    """Text as Postgres takes it: no NUL characters, cut to the column's length."""
    if value is None:
        return ""
    if type(value) is not str:
        value = str(value)
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value if len(value) <= limit else value[:limit]


def _int(value: object, maximum: int = _MAX_INT) -> int:
    if type(value) is int and 0 <= value <= maximum:
        return value  # the proxy's events: no conversion needed
    try:
        return max(0, min(int(value or 0), maximum))
    except (TypeError, ValueError, OverflowError):
        return 0


def _id(value: object) -> int | None:
    number = _int(value, _MAX_ID)
    return number or None


def _float(value: object) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _metadata(value: object) -> dict:
    if not value or not isinstance(value, dict):
        return {}
    try:
        # Round trip through JSON text without NULs (Postgres jsonb rejects \u0000).
        return orjson.loads(orjson.dumps(value).replace(b"\\u0000", b""))
    except (TypeError, orjson.JSONDecodeError):
        return {}


def _trace_id(value: object) -> str:
    """A W3C trace id (32 lowercase hex, not all zeros) or "": a garbled value never reaches the explorer."""
    if isinstance(value, str) and len(value) == 32 and value != "0" * 32 and _HEX.issuperset(value.lower()):
        return value.lower()
    return ""


def ledger_row(event: SpendEvent, batch: uuid.UUID) -> LedgerRow:
    """The ledger row for an event; values a column can't hold are clamped, never fatal to the batch."""
    return LedgerRow(
        request_id=_text(event.request_id, 64),
        created_at=_finished_at(event),
        route=_text(event.route, 64),
        status=_int(event.status, 32767),
        model=_text(event.model, 200),
        llm_provider=_text(event.llm_provider, 32),
        deployment_id=_id(event.deployment_id),
        organization_id=_id(event.organization_id),
        team_id=_id(event.team_id),
        key_id=_id(event.key_id),
        key_alias=_text(event.key_alias, 200),
        user_id=_id(event.user_id),
        customer_id=_text(event.customer_id, 255),
        session_id=_text(event.session_id, 255),
        prompt_tokens=_int(event.prompt_tokens),
        completion_tokens=_int(event.completion_tokens),
        cached_tokens=_int(event.cached_tokens),
        cost=event_cost(event),
        latency_ms=_float(event.latency_ms) or 0.0,
        ttft_ms=_float(event.ttft_ms),
        overhead_ms=_float(event.overhead_ms),
        upstream_ttfb_ms=_float(event.upstream_ttfb_ms),
        retries=_int(event.retries, 32767),
        error_type=_text(event.error_type, 64),
        limit_type=_text(event.limit_type, 32),
        metadata=_metadata(event.metadata),
        trace_id=_trace_id(event.trace_id),
        cache_hit=event.cache_hit is True,
        cost_saved=event_cost(event, "cost_saved"),
        guardrails=_metadata(event.guardrails),
        ingest_batch=batch,
    )
