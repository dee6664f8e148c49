"""The request explorer's CSV: the filtered, tenant-restricted ledger rows, streamed, with a row cap.

The rows are read in keyset chunks along the list's own order (newest first, ``(created_at, id)``),
each chunk one short query, so a large export holds neither a database cursor nor the whole file
in memory. Under ASGI (how the gateway serves the admin) the body is an async generator: Django would
otherwise read a synchronous iterator to the end before sending the first byte.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable
from decimal import Decimal

from asgiref.sync import sync_to_async
from django.db.models import Q, QuerySet

CHUNK = 2000
# (CSV header, the row's value); each a column of SpendLog or a join the export needs.
COLUMNS = (
    ("finished_at", "created_at"),
    ("request_id", "request_id"),
    ("route", "route"),
    ("status", "status"),
    ("limit_type", "limit_type"),
    ("error_type", "error_type"),
    ("organization", "organization__name"),
    ("team", "team__name"),
    ("key_alias", "key_alias"),
    ("customer_id", "customer_id"),
    ("model", "model"),
    ("provider", "llm_provider"),
    ("deployment_id", "deployment_id"),
    ("prompt_tokens", "prompt_tokens"),
    ("completion_tokens", "completion_tokens"),
    ("cached_tokens", "cached_tokens"),
    ("cost_usd", "cost"),
    ("total_ms", "latency_ms"),
    ("overhead_ms", "overhead_ms"),
    ("upstream_ttfb_ms", "upstream_ttfb_ms"),
    ("ttft_ms", "ttft_ms"),
    ("retries", "retries"),
)
# Spreadsheets run a cell that starts with one of these as a formula; tenant-typed text (key aliases,
# customer ids) could start with one, so such a cell is written with a leading quote.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def export_columns(model) -> tuple[tuple[str, str], ...]:
    """The export's columns; ``trace_id`` joins them where the ledger records it."""
    names = {f.name for f in model._meta.get_fields()}
    extra = (("trace_id", "trace_id"),) if "trace_id" in names else ()
    return COLUMNS[:2] + extra + COLUMNS[2:]


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    if isinstance(value, float):
        return round(value, 3)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def csv_lines(rows: Iterable[tuple], header: Iterable[str] | None = None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if header is not None:
        writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buffer.getvalue()


def is_truncated(queryset: QuerySet, cap: int) -> bool:
    """Whether the filtered rows go beyond the cap (one indexed probe at the cap's offset)."""
    return queryset[cap : cap + 1].exists()


async def csv_stream(queryset: QuerySet, cap: int) -> AsyncIterator[bytes]:
    """The header, then at most ``cap`` rows of ``queryset`` (newest first), one chunk per query."""
    columns = export_columns(queryset.model)
    lookups = [lookup for _header, lookup in columns]
    yield csv_lines([], header=[header for header, _lookup in columns]).encode()
    ordered = queryset.order_by("-created_at", "-id")
    sent, after = 0, None
    while sent < cap:
        page = ordered
        if after is not None:
            created, pk = after
            # The plain bound lets the index scan start at the last row; the OR alone would be a filter
            # that re-reads every earlier chunk (quadratic in the export's size).
            page = page.filter(created_at__lte=created).filter(Q(created_at__lt=created) | Q(id__lt=pk))
        size = min(CHUNK, cap - sent)
        rows = await sync_to_async(list)(page.values_list("created_at", "id", *lookups)[:size])
        if not rows:
            return
        yield csv_lines(row[2:] for row in rows).encode()
        sent += len(rows)
        after = rows[-1][:2]
        if len(rows) < size:
            return
