"""Ingestion is exact and idempotent: ledger rows, daily aggregates and window totals, replays and crashes."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db.models import Sum

from apps.spend.events import SpendEvent
from apps.spend.ingest import spend_ingest_events
from apps.spend.models import BudgetWindow, DailySpend, SpendLog
from apps.spend.selectors import key_usage, window_spent
from apps.spend.windows import window_for
from tests.factories import CustomerFactory, SpendEventFactory, VirtualKeyFactory

pytestmark = pytest.mark.integration


def make_event(
    key, *, cost="0.0012345", model="gpt-4o-mini", at=None, status=200, customer=None, **extra
) -> SpendEvent:
    if at is not None:
        extra["created_at"] = at
    return SpendEventFactory(
        key=key,
        status=status,
        model=model,
        llm_provider="openai",
        customer_id=customer,
        prompt_tokens=10,
        completion_tokens=5,
        cost=cost,
        **extra,
    )


def test_replaying_a_batch_changes_nothing(alpha, bob):
    key = VirtualKeyFactory(team=alpha, user=bob)
    events = [make_event(key, cost=f"0.00{i}1") for i in range(1, 8)]
    first = spend_ingest_events(events)
    again = spend_ingest_events(events + events[:3])
    assert (first.inserted, again.inserted) == (7, 0)
    expected = sum(Decimal(e.cost) for e in events)
    assert SpendLog.objects.count() == 7
    daily = DailySpend.objects.get()
    assert (daily.requests, daily.cost, daily.prompt_tokens, daily.completion_tokens) == (7, expected, 70, 35)
    assert window_spent("key", str(key.pk), "all") == expected
    assert window_spent("team", str(alpha.pk), "all") == expected
    assert window_spent("organization", str(alpha.organization_id), "all") == expected
    assert window_spent("user", str(bob.pk), "all") == expected


def test_a_batch_counts_only_rows_it_inserted_itself(alpha):
    key = VirtualKeyFactory(team=alpha)
    shared = make_event(key, cost="1")
    spend_ingest_events([shared])
    result = spend_ingest_events([shared, make_event(key, cost="2")])
    assert result.inserted == 1
    assert window_spent("key", str(key.pk), "all") == Decimal(3)
    assert DailySpend.objects.get().requests == 2


def test_windows_follow_the_scope_duration_and_org_time_zone(alpha):
    alpha.organization.time_zone = "America/New_York"
    alpha.organization.save()
    key = VirtualKeyFactory(team=alpha, budget_duration="1d", max_budget=Decimal(5))
    # 2026-03-01 03:00 UTC is still Feb 28 in New York.
    at = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    spend_ingest_events([make_event(key, cost="0.5", at=at.timestamp())])
    window = window_for("1d", at, "America/New_York")
    assert window.id == "1d:2026-02-28"
    assert window_spent("key", str(key.pk), window.id) == Decimal("0.5")
    assert window_spent("key", str(key.pk), "1d:2026-03-01") == 0


def test_per_model_budget_windows_are_kept_for_models_named_in_model_limits(alpha):
    key = VirtualKeyFactory(team=alpha, model_limits={"gpt-4o": {"max_budget": 1, "budget_duration": "1mo"}})
    at = datetime(2026, 1, 31, 23, 59, tzinfo=UTC)
    spend_ingest_events(
        [make_event(key, model="gpt-4o", cost="0.25", at=at.timestamp()), make_event(key, model="other")]
    )
    assert window_spent("model", f"key:{key.pk}:gpt-4o", "1mo:2026-01") == Decimal("0.25")
    assert not BudgetWindow.objects.filter(scope="model", scope_id=f"key:{key.pk}:other").exists()


def test_customer_windows_use_the_customer_pk_and_errors_are_counted(alpha):
    customer = CustomerFactory(organization=alpha.organization, external_id="end-1")
    key = VirtualKeyFactory(team=alpha)
    events = [make_event(key, customer="end-1", status=502, cost="0"), make_event(key, customer="end-1")]
    events.append(make_event(key, customer="unknown-end-user"))
    spend_ingest_events(events)
    window = BudgetWindow.objects.get(scope="customer")
    assert (window.scope_id, window.requests) == (str(customer.pk), 2)
    assert DailySpend.objects.filter(customer_id="end-1").get().errors == 1


def test_bad_values_are_recorded_not_fatal(alpha):
    key = VirtualKeyFactory(team=alpha)
    bad = make_event(key, cost="not-a-number")
    huge = make_event(key, cost="0.123456789012345")
    assert spend_ingest_events([bad, huge]).inserted == 2
    assert SpendLog.objects.get(request_id=bad.request_id).cost == 0
    assert SpendLog.objects.get(request_id=huge.request_id).cost == Decimal("0.1234567890")


def test_rebuild_totals_from_the_ledger(alpha):
    key = VirtualKeyFactory(team=alpha, budget_duration="1mo")
    spend_ingest_events([make_event(key, cost="0.1") for _ in range(5)])
    before = list(
        BudgetWindow.objects.order_by("scope", "scope_id").values_list("scope", "window_id", "spent", "requests")
    )
    BudgetWindow.objects.update(spent=Decimal(99))
    DailySpend.objects.update(requests=1234)
    call_command("spend_rebuild_totals", stdout=io.StringIO())
    after = list(
        BudgetWindow.objects.order_by("scope", "scope_id").values_list("scope", "window_id", "spent", "requests")
    )
    assert after == before
    assert DailySpend.objects.get().requests == 5


def test_key_usage_reports_remaining_budget(alpha):
    key = VirtualKeyFactory(team=alpha, budget_duration="1d", max_budget=Decimal(2))
    spend_ingest_events([make_event(key, cost="0.75"), make_event(key, cost="0.5")])
    usage = key_usage(key.pk)
    assert usage["window_spend"] == Decimal("1.25")
    assert usage["remaining_budget"] == Decimal("0.75")
    assert usage["total_requests"] == 2


# --- the Redis stream -------------------------------------------------------------------------

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh")


@pytest.fixture
def stream(settings):
    import redis

    from apps.spend.outbox import STREAM_KEY

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(STREAM_KEY)
    yield client
    client.delete(STREAM_KEY)


def emit_all(events) -> None:
    import asyncio

    from apps.spend.outbox import spend_outbox_create

    async def go():
        async with spend_outbox_create() as outbox:
            for event in events:
                await outbox.emit(event)

    asyncio.run(go())


@needs_redis
@pytest.mark.integration
def test_stream_n_events_give_n_rows_and_the_exact_cost(stream, alpha):
    from apps.spend.stream import stream_drain

    key = VirtualKeyFactory(team=alpha)
    events = [make_event(key, cost=f"0.000{i % 97:02d}7") for i in range(1234)]
    emit_all(events)
    result = stream_drain(batch_size=100)
    assert (result.received, result.inserted) == (1234, 1234)
    assert SpendLog.objects.count() == 1234
    assert window_spent("key", str(key.pk), "all") == sum(Decimal(e.cost) for e in events)
    assert stream.xlen("gateway:spend") == 0  # acknowledged entries are deleted


@needs_redis
@pytest.mark.integration
def test_crash_after_commit_before_ack_is_replayed_harmlessly(stream, alpha, settings, monkeypatch):
    from apps.spend import stream as stream_module

    settings.SPEND_INGEST_CLAIM_IDLE_MS = 100
    key = VirtualKeyFactory(team=alpha)
    events = [make_event(key, cost="0.01") for _ in range(50)]
    emit_all(events)

    real_pipeline = stream_module.redis.Redis.pipeline

    def dying_pipeline(self, *args, **kwargs):
        raise SystemExit("worker killed between commit and XACK")

    monkeypatch.setattr(stream_module.redis.Redis, "pipeline", dying_pipeline)
    with pytest.raises(SystemExit):
        stream_module.stream_drain(batch_size=20, consumer="dead-worker")
    monkeypatch.setattr(stream_module.redis.Redis, "pipeline", real_pipeline)
    assert SpendLog.objects.count() == 20  # the first batch committed, never acknowledged

    time.sleep(0.2)  # longer than the claim idle time: the dead consumer's entries are taken over
    result = stream_module.stream_drain(batch_size=20, consumer="new-worker")
    assert result.claimed == 20
    assert SpendLog.objects.count() == 50
    assert window_spent("key", str(key.pk), "all") == Decimal("0.50")
    assert stream.xpending("gateway:spend", "spend-ingest")["pending"] == 0


@needs_redis
@pytest.mark.integration
def test_crash_before_commit_loses_nothing(stream, alpha, settings, monkeypatch):
    from apps.spend import stream as stream_module

    settings.SPEND_INGEST_CLAIM_IDLE_MS = 100
    key = VirtualKeyFactory(team=alpha)
    emit_all([make_event(key, cost="0.02") for _ in range(30)])

    def dying_ingest(events):
        raise SystemExit("worker killed inside the transaction")

    monkeypatch.setattr("apps.spend.ingest.spend_ingest_events", dying_ingest)
    with pytest.raises(SystemExit):
        stream_module.stream_drain(batch_size=30, consumer="dead-worker")
    monkeypatch.undo()
    assert SpendLog.objects.count() == 0
    time.sleep(0.2)
    stream_module.stream_drain(batch_size=30, consumer="new-worker")
    assert SpendLog.objects.count() == 30
    assert window_spent("key", str(key.pk), "all") == Decimal("0.60")


@needs_redis
@pytest.mark.integration
def test_malformed_entries_go_to_the_dead_letter_stream(stream, alpha):
    from apps.spend.outbox import STREAM_KEY
    from apps.spend.stream import DEAD_LETTER_KEY, stream_drain

    stream.delete(DEAD_LETTER_KEY)
    key = VirtualKeyFactory(team=alpha)
    emit_all([make_event(key)])
    stream.xadd(STREAM_KEY, {"e": b"{not json"})
    result = stream_drain()
    assert (result.inserted, result.malformed) == (1, 1)
    assert stream.xlen(DEAD_LETTER_KEY) == 1
    stream.delete(DEAD_LETTER_KEY)


def test_values_no_column_can_hold_are_clamped_not_fatal(alpha):
    key = VirtualKeyFactory(team=alpha)
    weird = make_event(key, cost="1e30", status=99999, request_id="nul\x00id")
    weird.prompt_tokens = 10**12
    weird.completion_tokens = "lots"
    weird.ttft_ms = float("nan")
    weird.model = "m\x00odel"
    weird.metadata = {"note": "a\x00b", "n": 1}
    weird.user_id = "not-an-id"
    assert spend_ingest_events([weird]).inserted == 1
    row = SpendLog.objects.get()
    assert (row.request_id, row.model, row.cost, row.status) == ("nulid", "model", 0, 32767)
    assert (row.prompt_tokens, row.completion_tokens, row.ttft_ms, row.user_id) == (2_147_483_647, 0, None, None)
    assert row.metadata == {"note": "ab", "n": 1}


@needs_redis
@pytest.mark.integration
def test_an_event_the_database_rejects_is_dead_lettered_and_the_rest_ingested(stream, alpha, monkeypatch):
    from django.db import DataError

    from apps.spend.stream import DEAD_LETTER_KEY, stream_drain

    stream.delete(DEAD_LETTER_KEY)
    key = VirtualKeyFactory(team=alpha)
    events = [make_event(key, cost="0.1") for _ in range(9)] + [make_event(key, request_id="poison")]
    emit_all(events)
    from apps.spend import ingest

    real = ingest.spend_ingest_events

    def rejecting(batch):
        if any(e.request_id == "poison" for e in batch):
            raise DataError("value out of range")
        return real(batch)

    monkeypatch.setattr(ingest, "spend_ingest_events", rejecting)
    result = stream_drain()
    assert (result.inserted, result.malformed) == (9, 1)
    assert SpendLog.objects.count() == 9
    assert stream.xlen(DEAD_LETTER_KEY) == 1
    assert stream.xpending("gateway:spend", "spend-ingest")["pending"] == 0
    stream.delete(DEAD_LETTER_KEY)


@needs_redis
@pytest.mark.integration
def test_a_database_outage_acknowledges_nothing(stream, alpha, monkeypatch, settings):
    from django.db import OperationalError

    from apps.spend import stream as stream_module

    settings.SPEND_INGEST_CLAIM_IDLE_MS = 100
    key = VirtualKeyFactory(team=alpha)
    emit_all([make_event(key) for _ in range(5)])

    def down(batch):
        raise OperationalError("connection refused")

    monkeypatch.setattr("apps.spend.ingest.spend_ingest_events", down)
    with pytest.raises(OperationalError):
        stream_module.stream_drain(consumer="w1")
    assert stream.xpending("gateway:spend", "spend-ingest")["pending"] == 5
    monkeypatch.undo()
    time.sleep(0.2)
    assert stream_module.stream_drain(consumer="w2").inserted == 5


@needs_redis
@pytest.mark.integration
def test_after_a_database_outage_the_same_worker_retries_its_failed_batch_at_once(stream, alpha, monkeypatch):
    """A worker whose batch failed because the database was down writes it on its next run, not 60 s later
    (the claim idle time is for entries whose worker died)."""
    from django.db import OperationalError

    from apps.spend import stream as stream_module

    key = VirtualKeyFactory(team=alpha)
    emit_all([make_event(key, cost="0.03") for _ in range(7)])

    def down(batch):
        raise OperationalError("connection refused")

    monkeypatch.setattr("apps.spend.ingest.spend_ingest_events", down)
    with pytest.raises(OperationalError):
        stream_module.stream_drain(consumer="w1")
    monkeypatch.undo()
    emit_all([make_event(key, cost="0.03") for _ in range(3)])  # traffic went on meanwhile
    result = stream_module.stream_drain(consumer="w1")  # the database is back; default claim idle (60 s)
    assert (result.inserted, result.claimed) == (10, 0)
    assert SpendLog.objects.count() == 10
    assert window_spent("key", str(key.pk), "all") == Decimal("0.30")
    assert stream.xpending("gateway:spend", "spend-ingest")["pending"] == 0


@needs_redis
@pytest.mark.integration
def test_three_consumers_at_once_count_everything_exactly_once(transactional_db, stream, settings):
    import threading

    from django.db import connection

    from apps.spend.stream import stream_drain

    settings.SPEND_INGEST_CLAIM_IDLE_MS = 100  # they also steal each other's pending entries
    key = VirtualKeyFactory(budget_duration="1d")
    events = [make_event(key, cost=f"0.00{i % 7}1", customer=f"c{i % 13}") for i in range(3000)]
    emit_all(events)
    errors: list[BaseException] = []

    def consume(name: str) -> None:
        try:
            while stream.xlen("gateway:spend"):
                stream_drain(batch_size=100, consumer=name, max_seconds=30)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=consume, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    total = sum(Decimal(e.cost) for e in events)
    assert SpendLog.objects.count() == 3000
    assert window_spent("key", str(key.pk), window_for("1d", datetime.now(UTC)).id) == total
    assert DailySpend.objects.aggregate(n=Sum("requests"))["n"] == 3000
