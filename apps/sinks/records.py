"""From a ledger row to the record every sink sends: the row's columns as JSON, redacted.

One shape for all sinks (the HTTP payload's ``records``, one line of an S3 object, the source of a
Langfuse trace): documented in docs/operations.md ("Log sinks"). Built once per row in the ingesting
worker, then copied to each matching sink's queue as JSON text. Ingestion pays for it on every row, so
the columns are read with one C-level ``attrgetter`` and datetimes are left to orjson (RFC 3339, as
``isoformat`` writes them); only the free-text columns go through the redaction.
"""

from __future__ import annotations

import operator
from decimal import Decimal
from typing import Any

import orjson

from apps.sinks.redaction import redact, redact_text
from apps.spend.rows import LEDGER_ATTRIBUTES

# Not part of a record: the ingestion batch is the ledger's bookkeeping; metadata only with capture on.
_INTERNAL = frozenset({"ingest_batch", "metadata"})
RECORD_FIELDS = tuple(name for name in LEDGER_ATTRIBUTES if name not in _INTERNAL)
# Columns a person or a client typed: a key pasted as an alias must not leave.
TEXT_FIELDS = frozenset({"key_alias", "customer_id", "session_id", "error_type", "route", "model"})
_TEXT_POSITIONS = tuple(i for i, name in enumerate(RECORD_FIELDS) if name in TEXT_FIELDS)
_values_of = operator.attrgetter(*RECORD_FIELDS)


def sink_record(row: Any, *, capture_bodies: bool = False) -> dict[str, Any]:
    """The record for one ledger row (a ``LedgerRow`` or a ``SpendLog``); see ``record_json`` for its text."""
    values = list(_values_of(row))
    for i in _TEXT_POSITIONS:
        if values[i] and isinstance(values[i], str):
            values[i] = redact_text(values[i])
    record = dict(zip(RECORD_FIELDS, values, strict=True))
    if capture_bodies:
        record["metadata"] = redact(getattr(row, "metadata", None) or {})
    return record


def _decimal_as_text(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)  # exact, as the ledger stores it
    raise TypeError(f"{type(value).__name__} is not JSON")


def record_json(row: Any, *, capture_bodies: bool = False) -> bytes:
    return orjson.dumps(sink_record(row, capture_bodies=capture_bodies), default=_decimal_as_text)
