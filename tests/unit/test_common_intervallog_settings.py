"""The limiter's and the spend outbox's folded log lines follow ``LOG_EVENT_INTERVAL_SECONDS``.

Both used a fixed 10 s whatever the setting said. Here the interval is 0.2 s and a failure repeats for
about three intervals: an operator must see a line per interval (the first at once, then the folded
counts), and the counts must add up to the events. With the old fixed 10 s there is one line only.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from django.test import override_settings

from apps.common.redis_target import RedisTarget
from apps.ratelimit import engine
from apps.ratelimit.backends import BackendUnavailable
from apps.spend.outbox import spend_outbox_create
from tests.factories import SpendEventFactory

INTERVAL = 0.2
EVENTS = 25
SPACING = 0.025  # 25 events over ~0.6 s: three intervals


def lines_of(caplog, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and getattr(r, "event_kind", None)]


def test_the_limiters_backend_failures_fold_per_configured_interval(caplog):
    caplog.set_level(logging.WARNING, logger=engine.log.name)
    engine._events.cache_clear()  # built on first use: this test's settings, not an earlier test's
    try:
        with override_settings(LOG_EVENT_INTERVAL_SECONDS=INTERVAL):
            for _ in range(EVENTS):
                engine._backend_failed("settle", BackendUnavailable("test"))
                time.sleep(SPACING)
            time.sleep(INTERVAL * 2)  # the summary of the last folded events (a timer: not on a loop here)
    finally:
        engine._events.cache_clear()
    lines = lines_of(caplog, engine.log.name)
    assert len(lines) >= 3, [r.getMessage() for r in lines]
    assert sum(r.event_count for r in lines) == EVENTS
    assert "rate-limit backend unavailable during settle" in lines[0].getMessage()


class Collected:
    """Stands for the in-process ledger writer (not what is tested here): keeps what reaches it."""

    def __init__(self) -> None:
        self.events: list = []
        self.pending = 0

    def put(self, event) -> None:
        self.events.append(event)

    def close(self, timeout: float) -> bool:
        return True


async def test_the_spend_outbox_failure_lines_fold_per_configured_interval(caplog):
    caplog.set_level(logging.WARNING, logger="apps.spend.outbox")
    with socket.socket() as probe:  # a port nobody listens on: every XADD is refused at once
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with override_settings(
        LOG_EVENT_INTERVAL_SECONDS=INTERVAL, REDIS_TARGET=RedisTarget.from_url(f"redis://127.0.0.1:{closed}/0")
    ):
        outbox = spend_outbox_create()
    outbox.local = Collected()
    for _ in range(EVENTS):
        await outbox.emit(SpendEventFactory())
        await asyncio.sleep(SPACING)
    await asyncio.sleep(INTERVAL * 2)
    await outbox.close()
    assert len(outbox.local.events) == EVENTS  # nothing lost on the way
    lines = lines_of(caplog, "apps.spend.outbox")
    assert len(lines) >= 3, [r.getMessage() for r in lines]
    assert sum(r.event_count for r in lines) == EVENTS
    assert "spend stream unavailable" in lines[0].getMessage()
