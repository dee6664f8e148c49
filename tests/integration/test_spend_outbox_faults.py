"""The in-process outbox under load and failures: a batch that fails after part of its work is retried
whole (the transaction rolled back), and every event lands exactly once."""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal

import pytest
from django.db import OperationalError
from django.db.models import Sum

import apps.spend.ingest as ingest
from apps.spend.models import BudgetWindow, DailySpend, SpendLog
from apps.spend.outbox import spend_outbox_create
from tests.factories import VirtualKeyFactory
from tests.integration.test_spend_embedded import events_for

pytestmark = pytest.mark.integration


def test_failed_batches_and_concurrent_puts_and_flushes_count_each_event_once(transactional_db, settings, monkeypatch):
    settings.REDIS_TARGET = None
    settings.SPEND_EMBEDDED_BEAT = False
    settings.SPEND_LOCAL_OUTBOX_LINGER_SECONDS = 0.05
    key = VirtualKeyFactory()
    real_totals_add = ingest.totals_add
    calls = [0]

    def failing_after_the_work(rows):
        calls[0] += 1
        real_totals_add(rows)  # ledger rows and totals written in the batch's transaction, then it fails
        if calls[0] % 3 == 1:
            raise OperationalError("injected after the batch's writes")

    monkeypatch.setattr(ingest, "totals_add", failing_after_the_work)
    outbox = spend_outbox_create().local
    events = events_for(key, 2400)

    def producer(part) -> None:
        for i, event in enumerate(part):
            outbox.put(event)
            if i % 97 == 0:
                time.sleep(random.random() / 50)
            if i % 401 == 0:
                outbox.flush(timeout=0.01)  # a hurried writer while others keep putting

    threads = [threading.Thread(target=producer, args=(events[k::4],)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outbox.flush(timeout=120)
    assert outbox.pending == 0
    assert calls[0] > 3  # some batches really failed and were retried

    total = sum(Decimal(e.cost) for e in events)
    assert SpendLog.objects.count() == len(events)
    assert round(SpendLog.objects.aggregate(s=Sum("cost"))["s"], 6) == total
    assert DailySpend.objects.aggregate(s=Sum("requests"))["s"] == len(events)
    window = BudgetWindow.objects.get(scope="key")
    assert (window.spent, window.requests) == (total, len(events))
