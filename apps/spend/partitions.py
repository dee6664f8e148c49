"""Monthly partitions of the ledger on Postgres: created ahead, and dropped whole by retention.

``SpendLog`` is range-partitioned on ``created_at`` (migration 0004): one partition per UTC month, named
``spend_spendlog_pYYYY_MM``, plus ``spend_spendlog_default`` for a row no month partition covers (an event
with an odd timestamp is never lost; it is counted like any other). ``spendlog_partitions_ensure`` (the
``spend.partitions`` beat job, and after every ``migrate``) keeps this month and the next
``SPEND_LOG_PARTITIONS_AHEAD`` ones in place, moving any rows the DEFAULT partition holds for a month it
creates. ``spendlog_partitions_expire`` (called by retention) detaches and drops the months that ended
before the retention cutoff: dropping a table frees its space at once, where DELETE leaves dead rows for
vacuum and writes WAL per row.

SQLite (the embedded default) keeps a plain table: everything here is a no-op there.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection, transaction

from apps.spend.models import SpendLog

logger = logging.getLogger(__name__)

TABLE = SpendLog._meta.db_table
DEFAULT_PARTITION = f"{TABLE}_default"
# Serialises upkeep runs across processes (two beat runs, or a migrate during one): any constant will do.
_UPKEEP_LOCK = 0x5BE9D10C
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    start: datetime | None  # None for the DEFAULT partition
    end: datetime | None


def month_start(moment: datetime) -> datetime:
    """The first instant of ``moment``'s UTC month."""
    moment = moment.astimezone(UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def month_add(start: datetime, months: int) -> datetime:
    index = start.year * 12 + start.month - 1 + months
    return start.replace(year=index // 12, month=index % 12 + 1)


def partition_name(start: datetime) -> str:
    return f"{TABLE}_p{start:%Y_%m}"


def is_partitioned() -> bool:
    """Whether the ledger is a partitioned table (Postgres after migration 0004)."""
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)", [TABLE])
        return cursor.fetchone() is not None


def _timestamp(text: str) -> datetime:
    # Bounds are printed in the session's time zone (Django sets UTC), e.g. "2026-11-01 00:00:00+00".
    return datetime.fromisoformat(text).astimezone(UTC)


def spendlog_partitions() -> list[Partition]:
    """The ledger's partitions, month ones by start, the DEFAULT one last."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
            [TABLE],
        )
        rows = cursor.fetchall()
    months, default = [], []
    for name, bound in rows:
        match = _BOUND.search(bound or "")
        if match:
            months.append(Partition(name, _timestamp(match.group(1)), _timestamp(match.group(2))))
        else:
            default.append(Partition(name, None, None))
    return sorted(months, key=lambda p: p.start) + default


def _create_month(cursor, start: datetime) -> str:
    """Create the partition of the month starting at ``start``, taking over the DEFAULT partition's rows of it.

    Postgres refuses to attach a range while the DEFAULT partition holds rows in it, so those rows move
    first, under an exclusive lock on the DEFAULT partition (ingestion writing a row of that month waits
    the few milliseconds this takes, and then lands in the new partition).
    """
    q = connection.ops.quote_name
    name, end = partition_name(start), month_add(start, 1)
    cursor.execute(f"CREATE TABLE {q(name)} (LIKE {q(TABLE)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    cursor.execute(f"LOCK TABLE {q(DEFAULT_PARTITION)} IN ACCESS EXCLUSIVE MODE")
    cursor.execute(
        f"WITH moved AS (DELETE FROM {q(DEFAULT_PARTITION)} WHERE created_at >= %s AND created_at < %s "  # noqa: S608
        f"RETURNING *) INSERT INTO {q(name)} SELECT * FROM moved",
        [start, end],
    )
    if cursor.rowcount:
        logger.warning("spend: moved %d ledger rows from the DEFAULT partition into %s", cursor.rowcount, name)
    # Attaching creates the table's indexes (those of the partitioned table) on the new partition.
    cursor.execute(f"ALTER TABLE {q(TABLE)} ATTACH PARTITION {q(name)} FOR VALUES FROM (%s) TO (%s)", [start, end])
    return name


def spendlog_partitions_ensure(*, now: datetime | None = None, ahead: int | None = None) -> list[str]:
    """Create the DEFAULT partition and the month partitions from ``now``'s month to ``ahead`` months later.

    Idempotent; returns the partitions created. ``now`` is a parameter so tests move the clock.
    """
    if not is_partitioned():
        return []
    now = now or datetime.now(tz=UTC)
    ahead = settings.SPEND_LOG_PARTITIONS_AHEAD if ahead is None else ahead
    q = connection.ops.quote_name
    created: list[str] = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_UPKEEP_LOCK])
        existing = spendlog_partitions()
        if not any(p.start is None for p in existing):
            cursor.execute(f"CREATE TABLE {q(DEFAULT_PARTITION)} PARTITION OF {q(TABLE)} DEFAULT")
            created.append(DEFAULT_PARTITION)
        covered = {p.start for p in existing if p.start is not None}
        first = month_start(now)
        for offset in range(ahead + 1):
            start = month_add(first, offset)
            if start not in covered:
                created.append(_create_month(cursor, start))
    return created


def spendlog_partitions_expire(*, cutoff: datetime) -> dict[str, int]:
    """Detach and drop the month partitions that end at or before ``cutoff``; returns their names and row counts.

    Each partition goes in its own short transaction (DETACH takes a brief exclusive lock on the ledger).
    Rows older than ``cutoff`` in the boundary month, or in the DEFAULT partition, are the caller's to delete.
    """
    if not is_partitioned():
        return {}
    q = connection.ops.quote_name
    dropped: dict[str, int] = {}
    for partition in spendlog_partitions():
        if partition.end is None or partition.end > cutoff:
            continue
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_UPKEEP_LOCK])
            cursor.execute(f"ALTER TABLE {q(TABLE)} DETACH PARTITION {q(partition.name)}")
            cursor.execute(f"SELECT count(*) FROM {q(partition.name)}")  # noqa: S608 (once a month, for the log)
            dropped[partition.name] = cursor.fetchone()[0]
            cursor.execute(f"DROP TABLE {q(partition.name)}")
        logger.info(
            "spend: retention dropped ledger partition %s (%d rows, before %s)",
            partition.name,
            dropped[partition.name],
            cutoff.isoformat(),
        )
    return dropped
