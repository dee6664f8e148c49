"""A real Celery worker (with beat) ingests the spend stream: exact counts, and SIGKILL loses nothing."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
import redis
from django.conf import settings
from django.db.models import Sum

from apps.spend.models import BudgetWindow, DailySpend, SpendLog
from apps.spend.outbox import STREAM_KEY, spend_outbox_create
from apps.spend.schedules import schedules_setup
from apps.spend.stream import GROUP
from tests.factories import OrganizationFactory, SpendEventFactory, TeamFactory, VirtualKeyFactory
from tests.integration.spend_processes import CeleryWorker, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]


@pytest.fixture
def stream():
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(STREAM_KEY)
    yield client
    client.delete(STREAM_KEY)


@pytest.fixture
def worker(transactional_db, tmp_path, stream):
    schedules_setup()
    w = CeleryWorker(tmp_path, SPEND_INGEST_BATCH_SIZE="50", SPEND_INGEST_CLAIM_IDLE_MS="1500")
    yield w
    w.stop()


@pytest.fixture
def key(transactional_db):
    team = TeamFactory(organization=OrganizationFactory(name="Ledger Org"), name="Ledger Team")
    return VirtualKeyFactory(team=team, budget_duration="1mo")


def emit(key, count: int, *, cost_of=lambda i: f"0.000{i % 89:02d}3") -> Decimal:
    events = [
        SpendEventFactory(key=key, llm_provider="openai", prompt_tokens=7, completion_tokens=3, cost=cost_of(i))
        for i in range(count)
    ]

    async def go():
        async with spend_outbox_create() as outbox:
            for start in range(0, len(events), 100):  # like 100 concurrent requests finishing
                await asyncio.gather(*(outbox.emit(e) for e in events[start : start + 100]))

    asyncio.run(go())
    return sum((Decimal(e.cost) for e in events), Decimal(0))


def assert_exact(key, count: int, total: Decimal) -> None:
    assert SpendLog.objects.filter(key_id=key.pk).count() == count
    assert SpendLog.objects.filter(key_id=key.pk).aggregate(s=Sum("cost"))["s"] == total
    daily = DailySpend.objects.filter(key_id=key.pk).aggregate(r=Sum("requests"), c=Sum("cost"))
    assert (daily["r"], daily["c"]) == (count, total)
    window = BudgetWindow.objects.get(scope="key", scope_id=str(key.pk))
    assert (window.requests, window.spent) == (count, total)
    assert BudgetWindow.objects.get(scope="team", scope_id=str(key.team_id)).spent == total


def test_worker_ingests_n_events_exactly(worker, key, stream):
    total = emit(key, 500)
    worker.start()
    wait_until(lambda: SpendLog.objects.count() >= 500, timeout=90, message="ingestion did not finish", worker=worker)
    assert_exact(key, 500, total)
    wait_until(lambda: stream.xlen(STREAM_KEY) == 0, timeout=10, message="ingested entries stay in the stream")


def test_sigkill_during_ingestion_loses_and_duplicates_nothing(worker, key, stream):
    count = 6000
    total = emit(key, count)
    worker.start()
    wait_until(lambda: SpendLog.objects.count() > 0, timeout=90, message="ingestion never started", worker=worker)
    worker.kill()
    done_before_kill = SpendLog.objects.count()
    assert done_before_kill < count, "the worker finished before it could be killed; raise count"
    pending = stream.xpending(STREAM_KEY, GROUP)["pending"]
    worker.start()
    wait_until(lambda: SpendLog.objects.count() >= count, timeout=120, message="restart did not finish", worker=worker)
    time.sleep(1)  # anything claimed twice would land now
    assert_exact(key, count, total)
    assert stream.xpending(STREAM_KEY, GROUP)["pending"] == 0
    print(f"killed after {done_before_kill} rows with {pending} entries pending")


def test_alert_report_and_retention_jobs_run_in_the_real_worker(worker, key):
    from datetime import UTC, datetime, timedelta

    from apps.spend.ingest import spend_ingest_events
    from apps.spend.models import BudgetAlert, Report, ReportRun
    from apps.spend.tasks import spend_budget_alerts, spend_reports, spend_retention

    key.max_budget = Decimal("0.5")
    key.save()
    old = datetime.now(UTC) - timedelta(days=400)
    events = [
        SpendEventFactory(key=key, route="/v1/x", model="", cost="0.75"),
        SpendEventFactory(
            key=key, request_id="ancient", created_at=old.timestamp(), route="/v1/x", model="", cost="0.01"
        ),
    ]
    spend_ingest_events(events)
    Report.objects.create(name="Daily", organization_id=key.organization_id, period="daily", format="html")
    worker.start()
    spend_budget_alerts.delay()
    spend_reports.delay()
    spend_retention.delay()
    wait_until(lambda: BudgetAlert.objects.filter(scope="key", kind="hard").exists(), timeout=60,
               message="no budget alert", worker=worker)  # fmt: skip
    wait_until(lambda: ReportRun.objects.exists(), timeout=60, message="no report run", worker=worker)
    wait_until(lambda: not SpendLog.objects.filter(request_id="ancient").exists(), timeout=60,
               message="retention did not run", worker=worker)  # fmt: skip
    assert ReportRun.objects.get().file.name.endswith(".html")
