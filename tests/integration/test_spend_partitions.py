"""The ledger partitioned by month on real Postgres: the conversion of a table with rows, ingestion into the
right partition, idempotent redelivery, the DEFAULT partition, partition upkeep and retention by dropping
whole months. The clock is a parameter (``now=``), never a sleep."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor

from apps.console.dashboard import dashboard_for
from apps.spend.ingest import spend_ingest_events, totals_add
from apps.spend.models import BudgetWindow, DailySpend, SpendLog
from apps.spend.partitions import (
    DEFAULT_PARTITION,
    is_partitioned,
    partition_name,
    spendlog_partitions,
    spendlog_partitions_ensure,
)
from apps.spend.rows import ledger_row
from apps.spend.selectors import spend_summary
from apps.spend.services import spend_logs_purge
from apps.spend.stream import _parse
from tests.factories import SpendEventFactory, UserFactory, VirtualKeyFactory

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def where_rows_are() -> dict[str, str]:
    """request id -> the partition (table) that holds the row."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT request_id, tableoid::regclass::text FROM spend_spendlog")
        return dict(cursor.fetchall())


def events_at(key, times: list[datetime], prefix: str) -> list:
    return [
        SpendEventFactory(key=key, request_id=f"{prefix}-{i}", created_at=t.timestamp(), cost="0.25", prompt_tokens=10)
        for i, t in enumerate(times)
    ]


def daily_totals() -> list[tuple]:
    return sorted(DailySpend.objects.values_list("bucket", "requests", "cost"))


def test_the_ledger_is_partitioned_by_month_with_a_default_partition(transactional_db):
    assert is_partitioned()
    names = [p.name for p in spendlog_partitions()]
    assert DEFAULT_PARTITION in names
    this_month = datetime.now(tz=UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    assert partition_name(this_month) in names


def test_the_migration_converts_a_ledger_with_rows_and_the_dashboard_reads_the_same(transactional_db):
    user = UserFactory(username="root", is_superuser=True)
    key = VirtualKeyFactory()
    executor = MigrationExecutor(connection)
    conversion = executor.loader.get_migration("spend", "0004_spendlog_partitioned")
    # Only 0004 goes back (later migrations stay): the ledger as it was before, beside today's aggregates.
    executor.migrate([], plan=[(conversion, True)])
    try:
        assert not is_partitioned()
        now = datetime.now(tz=UTC).replace(hour=12, minute=0, second=0, microsecond=0)  # the same "today" for all
        times = [now - timedelta(minutes=5), now - timedelta(days=40), datetime(2019, 3, 9, 12, 0, tzinfo=UTC)]
        times += [now - timedelta(minutes=20 + i) for i in range(5)]
        rows = [ledger_row(e, batch=None) for e in events_at(key, times, "old")]
        for row, status in zip(rows, [200, 429, 200, 500, 200, 429, 200, 200], strict=True):
            row.status = status
            row.limit_type = "requests" if status == 429 else ""
        SpendLog.objects.bulk_create([SpendLog(**{a: getattr(r, a) for a in r.__slots__}) for r in rows])
        totals_add(rows)
        before_rows = list(SpendLog.objects.order_by("id").values_list("id", "request_id", "created_at", "cost"))
        before = dashboard_for(user, now)
        MigrationExecutor(connection).migrate([], plan=[(conversion, False)])
    finally:
        if not is_partitioned():
            MigrationExecutor(connection).migrate([], plan=[(conversion, False)])
    assert is_partitioned()
    assert list(SpendLog.objects.order_by("id").values_list("id", "request_id", "created_at", "cost")) == before_rows
    placed = where_rows_are()
    assert placed["old-2"] == "spend_spendlog_p2019_03"  # a partition for every month that had rows
    assert placed["old-1"] == f"spend_spendlog_p{times[1]:%Y_%m}"
    after = dashboard_for(user, now)
    for field in ("today", "month", "last_hour", "limited_by_type", "top_keys", "chart_days", "chart_hours"):
        assert getattr(after, field) == getattr(before, field), field
    assert after.last_hour.requests == 6 and after.limited_by_type == [("requests", 1)]
    # New rows still get fresh ids above the copied ones, and the new uniqueness rules apply.
    [event] = events_at(key, [now], "new")
    assert spend_ingest_events([event, event]).inserted == 1
    assert SpendLog.objects.get(request_id="new-0").id > before_rows[-1][0]
    assert spend_ingest_events([events_at(key, [times[0]], "old")[0]]).inserted == 0


def test_rows_land_in_their_month_and_a_redelivered_batch_counts_nothing_twice(transactional_db):
    spendlog_partitions_ensure(now=NOW - timedelta(days=60), ahead=3)
    key = VirtualKeyFactory(budget_duration="1mo")
    times = [NOW, NOW - timedelta(days=31), datetime(2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    times.append(datetime(2026, 11, 1, tzinfo=UTC))
    events = events_at(key, times, "r")
    assert spend_ingest_events(events).inserted == 4
    placed = where_rows_are()
    assert placed == {
        "r-0": "spend_spendlog_p2026_11",
        "r-1": "spend_spendlog_p2026_10",
        "r-2": "spend_spendlog_p2026_10",
        "r-3": "spend_spendlog_p2026_11",
    }
    daily, windows = daily_totals(), sorted(BudgetWindow.objects.values_list("scope", "window_id", "spent"))
    # The stream delivers the batch again (a worker died before XACK), and a second worker races on it.
    barrier = threading.Barrier(2)
    results = []

    def ingest_again() -> None:
        try:
            barrier.wait(timeout=30)
            results.append(spend_ingest_events(events).inserted)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=ingest_again) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [0, 0]
    assert spend_ingest_events(events).inserted == 0
    assert SpendLog.objects.count() == 4
    assert daily_totals() == daily
    assert sorted(BudgetWindow.objects.values_list("scope", "window_id", "spent")) == windows


def test_an_unreadable_time_takes_the_stream_entrys_so_a_redelivery_is_still_one_row(transactional_db):
    key = VirtualKeyFactory()
    [event] = events_at(key, [NOW], "garbled")
    event.created_at = "not a time"
    entries = [(b"1764064800000-7", {b"e": event.to_json()})]  # 2025-11-25 10:00 UTC, as Redis numbered it
    _, first, _ = _parse(None, entries)
    _, second, _ = _parse(None, entries)
    assert spend_ingest_events(first).inserted == 1
    assert spend_ingest_events(second).inserted == 0
    assert SpendLog.objects.get(request_id="garbled-0").created_at == datetime(2025, 11, 25, 10, 0, tzinfo=UTC)


def test_an_event_outside_every_month_partition_lands_in_default_is_counted_and_moves_later(transactional_db):
    key = VirtualKeyFactory()
    far = datetime(2031, 6, 15, 8, 0, tzinfo=UTC)
    assert spend_ingest_events(events_at(key, [far, NOW], "odd")).inserted == 2
    assert where_rows_are()["odd-0"] == DEFAULT_PARTITION
    assert DailySpend.objects.get(day=far.date()).requests == 1
    summary = spend_summary(DailySpend.objects.all(), group_by="day")
    assert [(row["value"], row["cost"]) for row in summary][-1] == ("2031-06-15", Decimal("0.25"))
    # The month's partition is created later (its upkeep run came): the row moves out of DEFAULT, nothing lost.
    created = spendlog_partitions_ensure(now=far, ahead=1)
    assert created == ["spend_spendlog_p2031_06", "spend_spendlog_p2031_07"]
    assert where_rows_are()["odd-0"] == "spend_spendlog_p2031_06"
    assert spendlog_partitions_ensure(now=far, ahead=1) == []  # idempotent
    assert SpendLog.objects.filter(request_id="odd-0").count() == 1
    assert spend_ingest_events(events_at(key, [far], "odd")).inserted == 0


def test_retention_drops_whole_old_months_and_trims_only_the_boundary_month(transactional_db):
    key = VirtualKeyFactory()
    spendlog_partitions_ensure(now=datetime(2026, 5, 1, tzinfo=UTC), ahead=7)
    times = [datetime(2026, month, day, 12, tzinfo=UTC) for month in range(5, 12) for day in (3, 20)]
    times.append(datetime(2020, 1, 1, tzinfo=UTC))  # in DEFAULT: deleted row by row
    spend_ingest_events(events_at(key, times, "t"))
    daily = daily_totals()
    # 100 days before 2026-11-25 10:00 is 2026-08-17 10:00: May, June and July go whole; August is cut.
    assert spend_logs_purge(older_than_days=100, now=NOW) == 8
    names = {p.name for p in spendlog_partitions()}
    assert not names & {"spend_spendlog_p2026_05", "spend_spendlog_p2026_06", "spend_spendlog_p2026_07"}
    assert {"spend_spendlog_p2026_08", "spend_spendlog_p2026_11", DEFAULT_PARTITION} <= names
    kept = sorted(SpendLog.objects.values_list("created_at", flat=True))
    assert kept[0] == datetime(2026, 8, 20, 12, tzinfo=UTC)
    assert len(kept) == 7
    assert daily_totals() == daily  # the aggregates keep the history the ledger no longer holds
    # A month-aligned cutoff (2026-09-01) drops August whole and deletes nothing row by row.
    assert spend_logs_purge(older_than_days=1, now=datetime(2026, 9, 2, tzinfo=UTC)) == 1
    assert "spend_spendlog_p2026_08" not in {p.name for p in spendlog_partitions()}
    assert SpendLog.objects.count() == 6
