"""Overload protection for /v1: each worker measures its event-loop lag and sheds new requests past a
threshold, lowest priority first, with a 503 and ``retry-after``, instead of queueing until every request
is slow.

Why the loop's lag: a worker past its capacity does not refuse anything by itself; it accepts every
connection and interleaves all of them, so every request (the first and the last) gets slower together
until clients time out. How late a timer fires is the one number that says "everything on this worker
waits this long per step" whatever the cause (CPU-bound load, a flood of connections, GC, a neighbour
stealing the core). A request shed before authentication's database path and before any limiter or
upstream work costs a few microseconds, so shedding brings the lag back down and keeps the admitted
requests fast.

The monitor sleeps ``SAMPLE_SECONDS`` and measures how late it wakes; an exponentially weighted average
smooths single pauses (a GC pass, one large body parsed). A request also sees the lag of the loop
iteration it runs in ("the monitor should have woken N ms ago"), so a burst that lands in one iteration is
cut inside that iteration rather than one sample later.

Thresholds (``PROXY_SHED_LOOP_LAG_MS`` = T, 0 turns shedding off): for priority 0 keys, and keys this
worker has not authenticated yet (their lookup would need the database), shedding starts at a lag of T;
for priority p at (p + 1) x T. From there the share of new requests shed grows with the lag, all of them
one T further: a ramp, not a switch, so the worker keeps admitting about what it can serve instead of
alternating between shedding everything (while the admitted backlog drains) and admitting everything.
The default priority is 1 (2 x T); a key an operator wants served through any overload gets a high one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time

from apps.proxy.context import KeyContext
from apps.proxy.errors import GatewayError
from apps.ratelimit import metrics

SAMPLE_SECONDS = 0.05
# Weight of the newest sample: a single 50 ms pause moves the average by 15 ms, a sustained lag is
# followed within ~5 samples (250 ms).
SMOOTHING = 0.3
UNKNOWN_PRIORITY = "uncached"


class LoopLagMonitor:
    """How far behind this worker's event loop runs, in seconds (smoothed), sampled by a background task."""

    def __init__(self, *, sample_seconds: float = SAMPLE_SECONDS, smoothing: float = SMOOTHING) -> None:
        self.sample_seconds = sample_seconds
        self.smoothing = smoothing
        self.lag = 0.0
        # time.monotonic() at which the sampler should wake next; 0.0 while it is not running.
        self._due = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._due = 0.0
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        gauge = metrics.LOOP_LAG
        while True:
            # loop.time() is what the timer is scheduled against (uvloop caches it per iteration), so
            # the lateness below is the loop's, not a mismatch between two clocks.
            self._due = loop.time() + self.sample_seconds
            await asyncio.sleep(self.sample_seconds)
            late = max(0.0, time.monotonic() - self._due)
            self.lag += self.smoothing * (late - self.lag)
            gauge.set(self.lag)

    def current(self) -> float:
        """The smoothed lag, or the lateness of the sampler right now when that is worse (a long iteration)."""
        due = self._due
        if due:
            overdue = time.monotonic() - due
            if overdue > self.lag:
                return overdue
        return self.lag


class LoadShedder:
    """Decides, per new /v1 request, whether this worker is too far behind to take it."""

    def __init__(self, *, threshold_ms: float, monitor: LoopLagMonitor | None = None) -> None:
        self.threshold = max(0.0, threshold_ms) / 1000.0
        self.monitor = monitor or LoopLagMonitor()

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    def start(self) -> None:
        if self.enabled:
            self.monitor.start()

    async def stop(self) -> None:
        await self.monitor.stop()

    def lag_past_threshold(self) -> float | None:
        """The current lag when it reaches the lowest tier's threshold, else None (the steady state)."""
        if not self.enabled:
            return None
        lag = self.monitor.current()
        return lag if lag >= self.threshold else None

    def admit(self, lag: float, key: KeyContext | None) -> None:
        """Raise the 503 for a share of requests that grows from 0 at the tier of ``key`` (None: not
        authenticated here yet) to all of them one threshold above it."""
        priority = max(0, key.priority) if key is not None else 0
        over = (lag - self.threshold * (priority + 1)) / self.threshold
        if over <= 0 or (over < 1 and random.random() >= over):  # noqa: S311 (a share, not a secret)
            return
        label = str(priority) if key is not None else UNKNOWN_PRIORITY
        metrics.SHED.labels(metrics.bounded("priority", label)).inc()
        raise overloaded(lag, priority)


def overloaded(lag: float, priority: int) -> GatewayError:
    # At least a second; as long as the worker is behind when that is longer (a client coming back
    # sooner would land in the same backlog).
    retry_after = max(1, math.ceil(lag))
    return GatewayError(
        503,
        f"The gateway is overloaded (this worker runs {lag * 1000:.0f} ms behind); new requests at priority "
        f"{priority} are shed until it catches up. Retry after {retry_after} s.",
        code="gateway_overloaded",
        error_type="overloaded_error",
        llm_provider="gateway",
        headers={"retry-after": str(retry_after)},
        kind="overloaded",
    )
