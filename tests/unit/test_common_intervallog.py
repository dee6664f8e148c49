"""One log line per kind of event per interval, with the count of what it folded (issue 13, item 7)."""

from __future__ import annotations

import asyncio
import logging

from apps.common.intervallog import IntervalLog


async def test_a_flood_of_one_kind_is_one_line_then_a_count(caplog):
    events = IntervalLog(logging.getLogger("gw.test.flood"), interval=0.2)
    with caplog.at_level(logging.WARNING, logger="gw.test.flood"):
        for _ in range(5000):
            events.event("reserve:stalled", "redis stalled")
        events.event("reserve:breaker_open", "breaker open")
        await asyncio.sleep(0.35)  # the summary is written when the interval ends, even if events stopped
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:2] == ["redis stalled", "breaker open"]
    assert len(lines) == 3 and lines[2].startswith("redis stalled (x4999 in the last ")


def test_events_from_a_thread_are_summarized_too(caplog):
    import time

    events = IntervalLog(logging.getLogger("gw.test.thread"), interval=0.1)
    with caplog.at_level(logging.WARNING, logger="gw.test.thread"):
        for _ in range(100):
            events.event("spend", "xadd failed")
        time.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and lines[0] == "xadd failed" and lines[1].startswith("xadd failed (x99 in the last ")
