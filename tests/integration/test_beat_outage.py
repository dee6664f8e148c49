"""Beat and the Celery worker down under traffic (issue 13, item 3), end to end.

Two uvicorn workers keep answering 16 clients while beat is stopped and the worker is shut down; the
spend events pile up in the Redis stream (a real backlog of thousands). When both come back the
backlog is ingested on beat's schedule by itself: every answered request in the ledger exactly once,
none lost, none doubled. Measured on main for 60 s: a 21,035-row backlog caught up 21 s after beat
returned, exact. The test uses a shorter outage (``OUTAGE_SECONDS``); docs/operations.md has the figures.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from django.conf import settings
from django.db.models import Count

from apps.spend.models import SpendLog
from apps.spend.outbox import STREAM_KEY
from apps.spend.schedules import schedules_setup
from tests.factories import DeploymentFactory, TeamFactory, VirtualKeyFactory
from tests.integration.fault_support import Traffic
from tests.integration.spend_processes import CeleryBeat, CeleryWorker, Gateway, OpenAIUpstream, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]

OUTAGE_SECONDS = 25.0


@pytest.fixture
def stream():
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(STREAM_KEY)
    yield client
    client.delete(STREAM_KEY)
    client.close()


@pytest.fixture
def upstream():
    with OpenAIUpstream() as server:
        yield server


@pytest.fixture
def key(transactional_db, upstream):
    schedules_setup()
    DeploymentFactory(model_name="beat-fault", provider="openai", model="ok", api_base=upstream.url)
    return VirtualKeyFactory(team=TeamFactory(name="Beat"), alias="beat")


def ledger_rows() -> int:
    """From a thread of the test's event loop: its own connection, closed again (the test database is dropped)."""
    from django.db import connection

    try:
        return SpendLog.objects.count()
    finally:
        connection.close()


def ledger_of(request_ids: set[str]) -> dict[str, int]:
    rows = SpendLog.objects.filter(request_id__in=request_ids).values("request_id").annotate(n=Count("id"))
    return {row["request_id"]: row["n"] for row in rows}


def test_backlog_built_while_beat_and_worker_are_down_is_ingested_exactly_once(key, stream, tmp_path):
    worker = CeleryWorker(tmp_path, embedded_beat=False)
    beat = CeleryBeat(tmp_path)
    figures: dict[str, float] = {}
    with Gateway(tmp_path, workers=2) as gateway:
        worker.start()
        beat.start()
        try:
            traffic = Traffic(gateway.url, key.secret, "beat-fault")

            async def scenario() -> None:
                deadline = time.monotonic() + 90
                while not await asyncio.to_thread(ledger_rows):  # beat and worker are up and ingesting
                    assert time.monotonic() < deadline, f"nothing ingested\n{worker.log_tail()}\n{beat.log_tail()}"
                    await asyncio.sleep(0.5)
                await asyncio.sleep(2)
                await asyncio.to_thread(beat.stop)  # SIGTERM, as an orchestrator stops it
                await asyncio.to_thread(worker.stop)
                figures["down"] = time.monotonic()
                figures["ledger_at_stop"] = await asyncio.to_thread(ledger_rows)
                await asyncio.sleep(OUTAGE_SECONDS)

            asyncio.run(traffic.run(scenario))
            answered = traffic.answered()
            figures["backlog"] = stream.xlen(STREAM_KEY)
            figures["ledger_before_return"] = SpendLog.objects.count()
            back = time.monotonic()
            worker.start()
            beat.start()
            wait_until(lambda: SpendLog.objects.filter(request_id__in=answered).count() >= len(answered),
                       timeout=240, message="the backlog was not ingested", worker=worker)  # fmt: skip
            figures["catch_up"] = time.monotonic() - back
            time.sleep(2)  # anything ingested twice would land now
            counts = ledger_of(answered)
            total_rows = SpendLog.objects.count()
        finally:
            beat.stop()
            worker.stop()

    print(
        f"\n{len(traffic.answers)} requests, {len(answered)} answered; beat and worker down "
        f"{OUTAGE_SECONDS:.0f} s: ledger {figures['ledger_at_stop']:.0f} -> {figures['ledger_before_return']:.0f} "
        f"while down, {figures['backlog']:.0f} entries in the stream; caught up {figures['catch_up']:.1f} s after "
        f"they returned; {total_rows} ledger rows"
    )
    assert set(traffic.statuses()) == {200}, traffic.statuses()  # the gateway never depended on them
    assert figures["backlog"] > 1000, figures  # a real backlog, not a handful
    assert figures["ledger_before_return"] == figures["ledger_at_stop"], figures  # nobody ingested meanwhile
    assert len(counts) == len(answered) and set(counts.values()) == {1}, "a request lost or in the ledger twice"
    assert total_rows == len(answered)  # and nothing that was not answered
    assert stream.xlen(STREAM_KEY) == 0
