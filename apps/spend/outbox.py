"""The spend outbox: where the proxy drops one ``SpendEvent`` per finished /v1 request.

``await spend_emit(event)`` never touches the database, so the request path never waits on Postgres:

- with Redis (``settings.REDIS_URL``): one ``XADD`` to the stream ``STREAM_KEY``, capped (approximately)
  at ``settings.SPEND_STREAM_MAXLEN`` entries as a safety net only; the ingestion task trims entries
  once they are acknowledged, so the cap is never reached while workers run. Celery workers read it
  with a consumer group (``apps.spend.ingest``).
- without Redis (embedded default), or when Redis does not answer: an in-process queue drained by one
  background thread into the same ingestion service. ``outbox_flush()`` runs at interpreter exit, so a
  clean shutdown loses nothing. The ledger's UNIQUE request id makes any replay harmless.

A caller that already has a Redis pipeline for its post-call work (the limiter's reconcile step) can
put the event on it with ``outbox_pipeline_add(pipe, event)`` instead: same stream, same fields.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
import weakref
from collections import deque
from typing import Any

from django.conf import settings

from apps.common.intervallog import IntervalLog
from apps.spend.events import SpendEvent
from apps.spend.live import live_publish

logger = logging.getLogger(__name__)

STREAM_KEY = "gateway:spend"
STREAM_FIELD = b"e"
DEFAULT_STREAM_MAXLEN = 1_000_000

# One async Redis client per event loop (a redis.asyncio client must not cross loops).
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()


def _stream_maxlen() -> int:
    return int(getattr(settings, "SPEND_STREAM_MAXLEN", DEFAULT_STREAM_MAXLEN))


def _redis_for_loop() -> Any:
    import redis.asyncio as aioredis

    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        # Bounded: a burst of finishing requests waits briefly for a connection instead of opening thousands.
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=64, timeout=5.0, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        client = aioredis.Redis(connection_pool=pool)
        _clients[loop] = client
    return client


def outbox_pipeline_add(pipe: Any, event: SpendEvent) -> None:
    """Queue the XADD for ``event`` on an existing redis pipeline (sync or async): no extra round trip."""
    live_publish(event)
    pipe.xadd(STREAM_KEY, {STREAM_FIELD: event.to_json()}, maxlen=_stream_maxlen(), approximate=True)


async def spend_emit(event: SpendEvent) -> None:
    """Append ``event`` to the durable outbox and the live feed. Never raises, never waits on the database."""
    live_publish(event)  # the admin's live page (apps/spend/live.py): an in-memory append, batched off-path
    await spend_emit_durable(event)


async def spend_emit_durable(event: SpendEvent) -> None:
    """The durable half of ``spend_emit``, for callers that fed the live page already (batch fallbacks)."""
    if settings.REDIS_URL:
        try:
            await _redis_for_loop().xadd(
                STREAM_KEY, {STREAM_FIELD: event.to_json()}, maxlen=_stream_maxlen(), approximate=True
            )
            return
        except Exception as exc:
            # Losing spend is worse than a slower path: keep the event in process and write it directly.
            _log_fallback(event, exc)
    local_outbox().put(event)


_fallback_log = IntervalLog(logger, interval=10.0)


def _log_fallback(event: SpendEvent, exc: Exception) -> None:
    """One line per 10 s with a count while Redis is down (each request would log otherwise)."""
    _fallback_log.event("xadd", f"spend outbox: XADD failed ({exc.__class__.__name__}: {exc}); using the local queue")


class LocalOutbox:
    """An in-process queue with one drain thread writing batches through ``spend_ingest_isolating``.

    Cheap for the event loop that feeds it: ``put`` appends under a lock and wakes the thread only when
    the queue goes from empty to non-empty or fills a batch, so a busy worker wakes its writer a few
    times a second, not once per request (every wake-up is a GIL hand-off in the middle of serving).
    The thread lingers ``SPEND_LOCAL_OUTBOX_LINGER_SECONDS`` to gather a batch; ``flush()`` cuts the
    linger short. Batches are retried (with backoff) until the database accepts them; ``flush()`` (run
    at exit and at ASGI shutdown) drains whatever is left, so a clean shutdown is lossless.
    """

    batch_size = 500

    def __init__(self) -> None:
        self._events: deque[SpendEvent] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # the writer waits here for events
        self._idle = threading.Condition(self._lock)  # flush() waits here for the writer
        self._in_flight = 0
        self._hurry = False
        self._thread: threading.Thread | None = None

    def put(self, event: SpendEvent) -> None:
        with self._lock:
            self._in_flight += 1
            self._events.append(event)
            if len(self._events) == 1 or len(self._events) >= self.batch_size:
                self._ready.notify()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="spend-outbox", daemon=True)
                self._thread.start()

    def _take_batch(self, block: bool) -> list[SpendEvent]:
        with self._lock:
            if block and not self._events:
                self._ready.wait(timeout=1.0)  # (wakes at least once a second for the embedded beat)
            if not self._events:
                return []
            linger = settings.SPEND_LOCAL_OUTBOX_LINGER_SECONDS
            if block and linger > 0:
                deadline = time.monotonic() + linger
                while len(self._events) < self.batch_size and not self._hurry:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._ready.wait(timeout=left)
            self._hurry = False
            take = min(len(self._events), self.batch_size)
            return [self._events.popleft() for _ in range(take)]

    def _write(self, batch: list[SpendEvent]) -> None:
        from django.db import connection

        from apps.spend.ingest import spend_ingest_isolating

        delay = 0.1
        while True:
            try:
                # The thread keeps its connection while events keep coming (_run closes it when idle):
                # opening one per batch costs more than the batch's inserts.
                _, rejected = spend_ingest_isolating(batch)
                for event in rejected:
                    logger.error("spend outbox: dropped request %s the database rejects: %s", event.request_id, event)
                break
            except Exception:
                logger.exception("spend outbox: writing %d events failed; retrying in %.1fs", len(batch), delay)
                connection.close()  # the retry starts from a fresh connection
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        with self._lock:
            self._in_flight -= len(batch)
            if self._in_flight == 0:
                self._idle.notify_all()

    def _run(self) -> None:
        from apps.spend.embedded import EmbeddedBeat

        beat = EmbeddedBeat() if settings.SPEND_EMBEDDED_BEAT and not settings.REDIS_URL else None
        from django.db import connection

        while True:
            batch = self._take_batch(block=True)
            if batch:
                self._write(batch)
            if beat is not None:  # no beat process without Redis: run the periodic jobs here
                beat.tick()
            if not batch:
                connection.close()  # a second without events: hold no database connection (this thread's own)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued event is in the ledger; True when nothing is left."""
        deadline = time.monotonic() + timeout
        with self._lock:
            thread_alive = self._thread is not None and self._thread.is_alive()
            self._hurry = True  # the writer stops lingering and writes what it has
            self._ready.notify()
        if not thread_alive:
            # At interpreter exit the daemon thread may be gone: drain here.
            while batch := self._take_batch(block=False):
                self._write(batch)
        with self._lock:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._hurry = True
                self._ready.notify()
                self._idle.wait(timeout=min(left, 0.05))
        return True

    @property
    def pending(self) -> int:
        return self._in_flight


_local = LocalOutbox()


def local_outbox() -> LocalOutbox:
    return _local


def outbox_flush(timeout: float = 30.0) -> bool:
    """Block until the in-process queue is empty (tests, shutdown). Redis-stream events are the workers' job."""
    return _local.flush(timeout)


async def outbox_shutdown(timeout: float = 30.0) -> None:
    """For the ASGI lifespan shutdown: write what the in-process queue holds before the server exits.

    atexit alone is not enough: uvicorn re-raises SIGTERM after its graceful shutdown, which ends the
    process without running atexit handlers.
    """
    if _local.pending and not await asyncio.to_thread(_local.flush, timeout):
        logger.error("spend outbox: %d events not written at shutdown", _local.pending)


@atexit.register
def _flush_at_exit() -> None:
    if _local.pending and not _local.flush(timeout=30.0):
        logger.error("spend outbox: %d events not written at exit", _local.pending)
