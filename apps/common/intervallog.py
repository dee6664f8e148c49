"""One log line per kind of event per interval, with a count: logs an operator can read during an incident.

A dependency outage repeats the same failure on every request (a 3 s Redis outage once wrote 51,733
lines). ``IntervalLog.event(kind, message)`` logs the first event of a kind at once, then counts the
others; the next line of that kind (at the earliest ``interval`` later) says how many were folded into
it, and a timer writes that summary when the events stop, so nothing is silently dropped. Safe to call
from the event loop and from threads.

Every line carries ``event_kind`` and ``event_count`` (how many events it stands for; the counts of a
kind's lines add up to the events) as record attributes, which the JSON log format writes out
(``apps.common.logs``). Summaries run outside any request, so they carry no request id.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time


class IntervalLog:
    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._lock = threading.Lock()
        # kind -> [last line at (monotonic), events folded since, level, message of the last event]
        self._kinds: dict[str, list] = {}

    def event(self, kind: str, message: str, *, level: int = logging.WARNING, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            state = self._kinds.get(kind)
            if state is not None and now - state[0] < self.interval:
                state[1] += 1
                state[3] = message
                if state[1] == 1:
                    self._schedule_summary(kind, state[0] + self.interval - now)
                return
            folded = state[1] if state is not None else 0
            self._kinds[kind] = [now, 0, level, message]
        suffix = f" (+{folded} more like it in the last {now - state[0]:.1f} s)" if folded else ""
        extra = {"event_kind": kind, "event_count": folded + 1}
        self.logger.log(level, "%s%s", message, suffix, exc_info=exc_info, extra=extra)

    def _schedule_summary(self, kind: str, delay: float) -> None:
        try:
            # An empty context: the summary belongs to no request (not to the one that scheduled it).
            asyncio.get_running_loop().call_later(max(delay, 0.0), self._summarize, kind, context=contextvars.Context())
        except RuntimeError:  # not on an event loop: a thread's events are summarized by a timer thread
            timer = threading.Timer(max(delay, 0.0), self._summarize, args=(kind,))
            timer.daemon = True
            timer.start()

    def _summarize(self, kind: str) -> None:
        now = time.monotonic()
        with self._lock:
            state = self._kinds.get(kind)
            if state is None or state[1] == 0:
                return
            folded, level, message = state[1], state[2], state[3]
            since = now - state[0]
            self._kinds[kind] = [now, 0, level, message]
        extra = {"event_kind": kind, "event_count": folded}
        self.logger.log(level, "%s (x%d in the last %.1f s)", message, folded, since, extra=extra)
