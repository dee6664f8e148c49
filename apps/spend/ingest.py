"""Idempotent ingestion of spend events: ledger rows, daily aggregates and budget-window totals.

One transaction per batch. Ledger rows are inserted skipping those already present (UNIQUE on request id and
finish time, both the event's own: the ledger is partitioned by that time on Postgres), and the
insert itself reports which rows are new (Postgres: ``ON CONFLICT DO NOTHING RETURNING``; SQLite:
``INSERT OR IGNORE`` plus a per-batch tag read back when not every row went in). A duplicate never carries
this batch's mark, even when two workers race on the same entry: the loser waits on the unique
index and skips. Only new rows move the aggregates, so replaying a batch, or a batch claimed by a
second worker, counts nothing twice.
"""

from __future__ import annotations

import logging
import operator
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache, partial

import orjson
from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.utils.module_loading import import_string

from apps.spend.events import SpendEvent
from apps.spend.models import BudgetWindow, DailySpend, MonthlySpend, SpendLog
from apps.spend.rows import LEDGER_ATTRIBUTES, LedgerRow, ledger_row
from apps.spend.scopes import scopes_for_events

logger = logging.getLogger(__name__)

_DAILY_DIMENSIONS = ("bucket", "day", "organization_id", "team_id", "key_id", "user_id", "customer_id", "model")
_DAILY_DIMENSIONS += ("deployment_id",)
_DAILY_SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "cost")
_WINDOW_COLUMNS = ("scope", "scope_id", "window_id", "window_start", "window_end", "organization_id", "team_id")
_WINDOW_COLUMNS += ("user_id",)


@dataclass(frozen=True, slots=True)
class IngestResult:
    received: int
    inserted: int


def spend_ingest_events(events: list[SpendEvent]) -> IngestResult:
    """Record ``events`` exactly once each; returns how many were new. Raises on database errors."""
    batch = uuid.uuid4()
    rows: dict[str, LedgerRow] = {}
    for event in events:
        row = ledger_row(event, batch)
        if row.request_id and row.request_id not in rows:
            rows[row.request_id] = row
    if not rows:
        return IngestResult(len(events), 0)
    with transaction.atomic():
        inserted = _insert_new(rows, batch)
        ids = list(rows)
        new_rows = [rows[rid] for rid in ids if rid in inserted]
        if new_rows:
            totals_add(new_rows)
            transaction.on_commit(partial(_ingested_hooks_run, new_rows))
    return IngestResult(len(events), len(new_rows))


@lru_cache(maxsize=4)
def _ingested_hooks(paths: tuple[str, ...]) -> tuple[Callable[[list[LedgerRow]], None], ...]:
    return tuple(import_string(path) for path in paths)


def _ingested_hooks_run(rows: list[LedgerRow]) -> None:
    """``settings.SPEND_INGESTED_HOOKS`` with the rows a batch added, once committed (the log sinks' fan-out).

    Named in settings rather than imported: the apps they belong to sit above the ledger. A failing hook
    is logged and never fails or repeats the ingestion (the rows are in the ledger either way).
    """
    for hook in _ingested_hooks(tuple(settings.SPEND_INGESTED_HOOKS)):
        try:
            hook(rows)
        except Exception:
            logger.exception("spend: the ingested-rows hook %s failed", getattr(hook, "__qualname__", hook))


def spend_ingest_isolating(events: list[SpendEvent]) -> tuple[IngestResult, list[SpendEvent]]:
    """``spend_ingest_events``, but a batch the database rejects is retried event by event.

    Returns the result and the events the database refused on their own (DataError/IntegrityError:
    a value no column can hold), which the caller parks so they can't block everything behind them.
    A database that is down (OperationalError) is not the data's fault: that propagates.
    """
    try:
        return spend_ingest_events(events), []
    except (DataError, IntegrityError):
        logger.exception("spend: a batch of %d was rejected; isolating the bad events", len(events))
    received = inserted = 0
    rejected: list[SpendEvent] = []
    for event in events:
        try:
            result = spend_ingest_events([event])
        except (DataError, IntegrityError):
            logger.error("spend: request %s rejected by the database", event.request_id)
            rejected.append(event)
            continue
        received += result.received
        inserted += result.inserted
    return IngestResult(received, inserted), rejected


_LOG_COLUMNS = [f.column for f in SpendLog._meta.concrete_fields if f.column != "id"]


def _insert_new(rows: dict[str, LedgerRow], batch: uuid.UUID) -> set[str]:
    """Insert the rows, skipping request ids already in the ledger; return the ids this call inserted.

    Postgres: one ``INSERT ... SELECT unnest(...) ON CONFLICT DO NOTHING RETURNING`` (fixed query text,
    one array per column). Elsewhere: insert-or-ignore, then the rows that carry this batch's tag are
    the new ones (no read back when the insert counted every row: then all of them are).
    """
    if connection.vendor == "postgresql":
        fields = {f.column: f for f in SpendLog._meta.concrete_fields}
        q = connection.ops.quote_name
        json_columns = {c for c in _LOG_COLUMNS if fields[c].get_internal_type() == "JSONField"}
        # JSON travels as text and is cast in SQL; every other value is passed as is (psycopg adapts it).
        casts = [("text[]::" if c in json_columns else "") + f"{fields[c].db_type(connection)}[]" for c in _LOG_COLUMNS]
        arrays = ", ".join(f"%s::{cast}" for cast in casts)
        sql = (
            f"INSERT INTO {q(SpendLog._meta.db_table)} ({', '.join(q(c) for c in _LOG_COLUMNS)}) "  # noqa: S608
            f"SELECT * FROM unnest({arrays}) ON CONFLICT ({q('request_id')}, {q('created_at')}) DO NOTHING "
            f"RETURNING {q('request_id')}"
        )
        objs = list(rows.values())
        params = []
        for column in _LOG_COLUMNS:
            attname = fields[column].attname
            if column in json_columns:
                params.append([orjson.dumps(getattr(o, attname)).decode() for o in objs])
            else:
                params.append([getattr(o, attname) for o in objs])
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return {r[0] for r in cursor.fetchall()}
    if connection.vendor == "sqlite":
        if _sqlite_insert_or_ignore(list(rows.values())) == len(rows):
            return set(rows)
    else:
        objs = [SpendLog(**{a: getattr(r, a) for a in LEDGER_ATTRIBUTES}) for r in rows.values()]
        SpendLog.objects.bulk_create(objs, ignore_conflicts=True, batch_size=200)
    inserted: set[str] = set()
    ids = list(rows)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        inserted.update(
            SpendLog.objects.filter(request_id__in=chunk, ingest_batch=batch).values_list("request_id", flat=True)
        )
    return inserted


def _sqlite_converters() -> list[tuple[str, str, object]]:
    """Per column: the attribute and how SQLite stores it (what the ORM's per-value preparation does)."""
    ops = connection.ops
    converters: list[tuple[str, str, object]] = []
    for f in SpendLog._meta.concrete_fields:
        if f.primary_key:
            continue
        kind = f.get_internal_type()
        if kind == "DateTimeField":
            convert = ops.adapt_datetimefield_value
        elif kind == "DecimalField":
            convert = (lambda d: lambda v: ops.adapt_decimalfield_value(v, d.max_digits, d.decimal_places))(f)
        elif kind == "UUIDField":
            convert = lambda v: v.hex if v is not None else None  # noqa: E731
        elif kind == "JSONField":
            # The empty object (nearly every row) without a json.dumps call; the same stored text.
            convert = (lambda field: lambda v: "{}" if v == {} else field.get_db_prep_save(v, connection))(f)
        else:
            convert = None
        converters.append((f.attname, f.column, convert))
    return converters


def _sqlite_insert_or_ignore(objs: list[LedgerRow]) -> int:
    """The embedded default's ledger insert: one ``INSERT OR IGNORE`` executemany; returns rows inserted.

    ``bulk_create`` spends most of the embedded worker's ingestion time preparing values field by field;
    this writes the same stored values (see ``_sqlite_converters``) several times faster: one C-level
    attrgetter per row, then only the few columns SQLite stores differently are converted.
    """
    converters = _sqlite_converters()
    q = connection.ops.quote_name
    columns = ", ".join(q(column) for _, column, _ in converters)
    marks = ", ".join("%s" for _ in converters)
    sql = f"INSERT OR IGNORE INTO {q(SpendLog._meta.db_table)} ({columns}) VALUES ({marks})"  # noqa: S608
    values_of = operator.attrgetter(*(attname for attname, _, _ in converters))
    conversions = [(i, convert) for i, (_, _, convert) in enumerate(converters) if convert is not None]
    params = []
    for obj in objs:
        row = list(values_of(obj))
        for i, convert in conversions:
            row[i] = convert(row[i])
        params.append(row)
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
        return cursor.rowcount


def totals_add(rows: list[LedgerRow] | list[SpendLog]) -> None:
    """Add ledger rows to ``DailySpend``, ``MonthlySpend`` and ``BudgetWindow`` (inside the caller's transaction)."""
    by_dims: dict[tuple, list] = {}
    for row in rows:
        dims = (
            row.created_at.astimezone(UTC).date(),
            row.organization_id,
            row.team_id,
            row.key_id,
            row.user_id,
            row.customer_id,
            row.model,
            row.deployment_id,
        )
        acc = by_dims.get(dims)
        if acc is None:
            acc = by_dims[dims] = [0, 0, 0, 0, 0, Decimal(0)]
        acc[0] += 1
        acc[1] += 1 if row.status >= 400 else 0
        acc[2] += row.prompt_tokens
        acc[3] += row.completion_tokens
        acc[4] += row.cached_tokens
        acc[5] += row.cost
    # The bucket text is the unique key; distinct dimension tuples can share one (None and "" alike).
    daily: dict[str, list] = {}
    for dims, sums in by_dims.items():
        bucket = "|".join("" if d is None else str(d) for d in dims)[:600]
        acc = daily.get(bucket)
        if acc is None:
            daily[bucket] = [*dims, *sums]
        else:
            for i, value in enumerate(sums, start=8):
                acc[i] += value
    _upsert_add(
        DailySpend,
        conflict=["bucket"],
        columns=[*_DAILY_DIMENSIONS, *_DAILY_SUMS],
        add=list(_DAILY_SUMS),
        values=[[bucket, *acc] for bucket, acc in sorted(daily.items())],
    )
    # The same sums per month (the first day stands for the month); its bucket is the day's with that day.
    monthly: dict[str, list] = {}
    for acc in daily.values():
        dims = [acc[0].replace(day=1), *acc[1:8]]
        bucket = "|".join("" if d is None else str(d) for d in dims)[:600]
        into = monthly.get(bucket)
        if into is None:
            monthly[bucket] = [*dims, *acc[8:]]
        else:
            for i in range(8, 14):
                into[i] += acc[i]
    _upsert_add(
        MonthlySpend,
        conflict=["bucket"],
        columns=["bucket", "month", *_DAILY_DIMENSIONS[2:], *_DAILY_SUMS],
        add=list(_DAILY_SUMS),
        values=[[bucket, *acc] for bucket, acc in sorted(monthly.items())],
    )

    windows: dict[tuple[str, str, str], list] = {}
    now = datetime.now(tz=UTC)
    for row, scopes in scopes_for_events(rows):
        for scope in scopes:
            ident = (scope.scope, scope.scope_id, scope.window.id)
            acc = windows.get(ident)
            if acc is None:
                acc = windows[ident] = [
                    *ident,
                    scope.window.start,
                    scope.window.end,
                    scope.organization_id,
                    scope.team_id,
                    scope.user_id,
                    Decimal(0),
                    0,
                    0,
                    now,
                ]
            acc[8] += row.cost
            acc[9] += 1
            acc[10] += row.prompt_tokens + row.completion_tokens
    _upsert_add(
        BudgetWindow,
        conflict=["scope", "scope_id", "window_id"],
        columns=[*_WINDOW_COLUMNS, "spent", "requests", "tokens", "updated_at"],
        add=["spent", "requests", "tokens"],
        replace=["updated_at"],
        values=[windows[k] for k in sorted(windows)],
    )


def _upsert_add(model, *, conflict: list[str], columns: list[str], add: list[str], values: list[list], replace=()):
    """INSERT ... ON CONFLICT DO UPDATE SET col = col + excluded.col.

    Postgres gets one statement per call (``unnest`` of one array per column: a fixed query text with
    a handful of parameters); SQLite gets multi-row VALUES in chunks under its parameter limit. Rows
    arrive sorted by their unique key, so concurrent batches lock rows in the same order.
    """
    if not values:
        return
    q = connection.ops.quote_name
    table = q(model._meta.db_table)
    fields = {f.column: f for f in model._meta.concrete_fields}
    names = ", ".join(q(c) for c in columns)
    sets = [f"{q(c)} = {table}.{q(c)} + EXCLUDED.{q(c)}" for c in add]
    sets += [f"{q(c)} = EXCLUDED.{q(c)}" for c in replace]
    on_conflict = f"ON CONFLICT ({', '.join(q(c) for c in conflict)}) DO UPDATE SET {', '.join(sets)}"
    # Identifiers come from model metadata; every value is a parameter.
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            arrays = ", ".join(f"%s::{fields[c].db_type(connection)}[]" for c in columns)
            sql = f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) {on_conflict}"  # noqa: S608
            cursor.execute(sql, [[row[i] for row in values] for i in range(len(columns))])
            return
        per_row = "(" + ", ".join(["%s"] * len(columns)) + ")"
        chunk_size = max(1, 900 // len(columns))
        for begin in range(0, len(values), chunk_size):
            chunk = values[begin : begin + chunk_size]
            params: list = []
            for row in chunk:
                params.extend(fields[c].get_db_prep_save(v, connection) for c, v in zip(columns, row, strict=True))
            sql = f"INSERT INTO {table} ({names}) VALUES {', '.join([per_row] * len(chunk))} {on_conflict}"  # noqa: S608
            cursor.execute(sql, params)
