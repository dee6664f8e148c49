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
import queue
import threading
import time
import weakref
from typing import Any

from django.conf import settings

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
        except Exception:
            # Losing spend is worse than a slower path: keep the event in process and write it directly.
            _log_fallback(event)
    local_outbox().put(event)


_fallback_logged_at = [0.0]


def _log_fallback(event: SpendEvent) -> None:
    """At most one log line per 10 s while Redis is down (each request would log otherwise)."""
    now = time.monotonic()
    if now - _fallback_logged_at[0] >= 10.0:
        _fallback_logged_at[0] = now
        logger.exception("spend outbox: XADD failed (request %s); using the local queue", event.request_id)


class LocalOutbox:
    """An in-process queue with one drain thread writing batches through ``spend_ingest_events``.

    Batches are retried (with backoff) until the database accepts them; the thread is a daemon, and
    ``flush()`` (run at exit) drains whatever is left synchronously, so a clean shutdown is lossless.
    """

    batch_size = 500

    def __init__(self) -> None:
        self._queue: queue.Queue[SpendEvent] = queue.Queue()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._thread: threading.Thread | None = None

    def put(self, event: SpendEvent) -> None:
        with self._lock:
            self._in_flight += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="spend-outbox", daemon=True)
                self._thread.start()
        self._queue.put(event)

    def _take_batch(self, block: bool) -> list[SpendEvent]:
        batch: list[SpendEvent] = []
        try:
            batch.append(self._queue.get(block=block, timeout=1.0 if block else None))
        except queue.Empty:
            return batch
        deadline = time.monotonic() + settings.SPEND_LOCAL_OUTBOX_LINGER_SECONDS
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                wait = block and remaining > 0
                batch.append(self._queue.get(timeout=remaining) if wait else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[SpendEvent]) -> None:
        from django.db import close_old_connections, connection

        from apps.spend.ingest import spend_ingest_isolating

        delay = 0.1
        while True:
            try:
                close_old_connections()
                _, rejected = spend_ingest_isolating(batch)
                for event in rejected:
                    logger.error("spend outbox: dropped request %s the database rejects: %s", event.request_id, event)
                break
            except Exception:
                logger.exception("spend outbox: writing %d events failed; retrying in %.1fs", len(batch), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        if self._queue.empty():
            connection.close()  # idle: hold no database connection (this thread's own)
        with self._lock:
            self._in_flight -= len(batch)
            if self._in_flight == 0:
                self._idle.notify_all()

    def _run(self) -> None:
        from apps.spend.embedded import EmbeddedBeat

        beat = EmbeddedBeat() if settings.SPEND_EMBEDDED_BEAT and not settings.REDIS_URL else None
        while True:
            batch = self._take_batch(block=True)
            if batch:
                self._write(batch)
            if beat is not None:  # no beat process without Redis: run the periodic jobs here
                from django.db import close_old_connections, connection

                close_old_connections()
                if beat.tick() and self._queue.empty():
                    connection.close()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued event is in the ledger; True when nothing is left."""
        deadline = time.monotonic() + timeout
        with self._lock:
            thread_alive = self._thread is not None and self._thread.is_alive()
        if not thread_alive:
            # At interpreter exit the daemon thread may be gone: drain here.
            while batch := self._take_batch(block=False):
                self._write(batch)
        with self._lock:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(timeout=left)
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
