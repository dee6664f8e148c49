"""From a ledger row to the record every sink sends: the row's columns as JSON, redacted.

One shape for all sinks (the HTTP payload's ``records``, one line of an S3 object, the source of a
Langfuse trace): documented in docs/operations.md ("Log sinks"). Built once per row in the ingesting
worker, then copied to each matching sink's queue as JSON text.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from apps.sinks.redaction import redact, redact_text
from apps.spend.rows import LEDGER_ATTRIBUTES

# Not part of a record: the ingestion batch is the ledger's bookkeeping; metadata only with capture on.
_INTERNAL = frozenset({"ingest_batch", "metadata"})
RECORD_FIELDS = tuple(name for name in LEDGER_ATTRIBUTES if name not in _INTERNAL)
TEXT_FIELDS = frozenset({"key_alias", "customer_id", "session_id", "error_type", "route", "model"})


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)  # exact, as the ledger stores it
    return value


def sink_record(row: Any, *, capture_bodies: bool = False) -> dict[str, Any]:
    """The record for one ledger row (a ``LedgerRow`` or a ``SpendLog``)."""
    record: dict[str, Any] = {}
    for name in RECORD_FIELDS:
        value = _jsonable(getattr(row, name, None))
        if name in TEXT_FIELDS and isinstance(value, str):
            value = redact_text(value)
        record[name] = value
    if capture_bodies:
        record["metadata"] = redact(getattr(row, "metadata", None) or {})
    return record
