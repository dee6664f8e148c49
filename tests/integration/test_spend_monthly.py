"""The per-month aggregates: ingestion keeps them equal to the daily ones, the migration's backfill builds the same,
and a summary served from whole months plus the cut-short days at either end gives what the daily rows alone give."""

from __future__ import annotations

import importlib
from datetime import UTC, date, datetime, timedelta

import pytest
from django.apps import apps
from django.db.models import Sum
from django.db.models.functions import TruncMonth

from apps.console.dashboard import dashboard_for
from apps.spend.ingest import spend_ingest_events
from apps.spend.models import DailySpend, MonthlySpend
from apps.spend.selectors import GROUPINGS, key_usage, money, spend_summary
from apps.spend.services import spend_totals_rebuild
from tests.factories import SpendEventFactory, UserFactory, VirtualKeyFactory

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 30, 7, 0, tzinfo=UTC)


@pytest.fixture
def ledger(transactional_db):
    keys = [VirtualKeyFactory(), VirtualKeyFactory(), VirtualKeyFactory()]
    events = [
        SpendEventFactory(
            key=keys[i % 3],
            created_at=(START + timedelta(hours=37 * i)).timestamp(),  # ~7 months, across month edges
            model=["m1", "m2", "m3"][i % 3],
            status=200 if i % 5 else 502,
            customer_id=["", "c1", "c2", "c1|x"][i % 4],
            prompt_tokens=i,
            completion_tokens=2,
            cost=f"0.0{i % 9}1",
        )
        for i in range(140)
    ]
    spend_ingest_events(events)
    return keys


def monthly_from_daily() -> list[tuple]:
    rows = (
        DailySpend.objects.annotate(m=TruncMonth("day"))
        .values("m", "key_id", "model", "customer_id")
        .annotate(requests=Sum("requests"), errors=Sum("errors"), cost=Sum("cost"))
    )
    return sorted(
        (r["m"], r["key_id"], r["model"], r["customer_id"], r["requests"], r["errors"], r["cost"]) for r in rows
    )


def monthly_rows() -> list[tuple]:
    rows = MonthlySpend.objects.values_list("month", "key_id", "model", "customer_id", "requests", "errors", "cost")
    return sorted(rows)


def test_ingestion_keeps_the_monthly_rows_equal_to_the_daily_sums(ledger):
    assert MonthlySpend.objects.count() < DailySpend.objects.count()
    assert monthly_rows() == monthly_from_daily()
    assert {m.month.day for m in MonthlySpend.objects.all()} == {1}


def test_the_migration_backfill_and_a_rebuild_build_the_same_monthly_rows(ledger):
    recorded = monthly_rows()
    MonthlySpend.objects.all().delete()
    importlib.import_module("apps.spend.migrations.0005_monthly_spend").backfill(apps, None)
    assert monthly_rows() == recorded
    spend_totals_rebuild()
    assert monthly_rows() == recorded


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (None, None),  # all time: the monthly rows only
        (date(2026, 3, 1), date(2026, 6, 1)),  # month-aligned
        (date(2026, 2, 14), date(2026, 6, 17)),  # cut-short months at both ends
        (datetime(2026, 2, 14, 13, 0, tzinfo=UTC), datetime(2026, 6, 17, 0, 0, 1, tzinfo=UTC)),
        (date(2026, 4, 3), date(2026, 4, 20)),  # inside one month: the daily rows only
        (date(2026, 3, 5), None),
        (None, date(2026, 5, 31)),
        (None, date(2026, 6, 1)),
    ],
)
def test_a_summary_from_months_and_edge_days_equals_the_one_from_days(ledger, start, end):
    daily, monthly = DailySpend.objects.all(), MonthlySpend.objects.all()
    for group_by in sorted(GROUPINGS):
        expected = spend_summary(daily, group_by=group_by, start=start, end=end)
        assert spend_summary(daily, monthly=monthly, group_by=group_by, start=start, end=end) == expected, group_by
    params = {"key": ledger[0].pk}
    expected = spend_summary(daily, group_by="model", start=start, end=end, params=params)
    assert spend_summary(daily, monthly=monthly, group_by="model", start=start, end=end, params=params) == expected


def test_the_dashboards_month_and_the_key_usage_read_the_monthly_rows(ledger):
    root = UserFactory(is_superuser=True)
    now = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)
    month = DailySpend.objects.filter(day__gte=date(2026, 5, 1), day__lt=date(2026, 6, 1))
    dashboard = dashboard_for(root, now)
    assert dashboard.month.requests == month.aggregate(n=Sum("requests"))["n"] > 0
    may_cost = MonthlySpend.objects.filter(month=date(2026, 5, 1)).aggregate(c=Sum("cost"))["c"]
    assert dashboard.month.cost == may_cost
    key_total = DailySpend.objects.filter(key_id=ledger[0].pk).aggregate(c=Sum("cost"))["c"]
    assert key_usage(ledger[0].pk)["total_spend"] == money(key_total) > 0
