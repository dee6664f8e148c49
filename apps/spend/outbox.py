"""The spend outbox: where the proxy drops one ``SpendEvent`` per finished /v1 request.

One ``SpendOutbox`` per gateway (built by ``spend_outbox_create()``, the one factory; the proxy's ASGI
lifespan creates it at startup and closes it at shutdown). ``await outbox.emit(event)`` never touches
the database and never waits on Redis, so the request path waits on neither:

- with Redis (``settings.REDIS_TARGET``): the events of requests that finish in the same event-loop tick
  are coalesced and written with one pipelined ``XADD`` per event to the stream ``STREAM_KEY``, off the
  request path, capped (approximately) at ``settings.SPEND_STREAM_MAXLEN`` entries as a safety net only
  (the ingestion task trims entries once acknowledged). Celery workers read the stream with a consumer
  group (``apps.spend.stream``); what the database rejects there goes to ``DEAD_LETTER_KEY``.
- without Redis (embedded default), or when a batch's ``XADD`` fails: the outbox's ``LocalOutbox``, an
  in-process queue drained by one background thread into the same ingestion service. After a failed
  batch the next ones go there too for ``REDIS_RETRY_SECONDS`` instead of piling up connections on a
  Redis that does not answer; one log line per interval says how many took that way (a 3 s outage once
  logged 2,647 tracebacks). The ledger's UNIQUE request id makes it harmless when a timed-out XADD was
  applied after all.
- with replicas (``settings.SPEND_STREAM_MIN_REPLICAS``, 1 by default under Redis Sentinel): the batch's
  pipeline ends with ``WAIT n timeout``; a batch fewer replicas acknowledged takes the local way too. A
  failover promotes a replica, so an event only the old master held (acknowledged in the seconds before
  it was demoted, then discarded when it resyncs from the new master) would be lost; here such a batch
  is written from this process instead, and if it did reach the stream as well the UNIQUE request id
  keeps the ledger exact. What can still be lost: an event in the stream whose replica dies together
  with the master before the ingestion read it (two failures at once).

``close()`` writes what is queued (lifespan shutdown: uvicorn re-raises SIGTERM after its graceful
shutdown, which ends the process without atexit handlers); an outbox that was never closed still
drains its local queue at interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from collections import deque

import orjson
import redis.asyncio as aioredis
from django.conf import settings
from django.db import connection

from apps.common.intervallog import IntervalLog
from apps.common.redis_target import RedisTarget, redis_target
from apps.spend.embedded import EmbeddedBeat
from apps.spend.events import SpendEvent
from apps.spend.ingest import spend_ingest_isolating
from apps.spend.live import live_publish

logger = logging.getLogger(__name__)

# The stream's names: the producer here and the consumers in apps/spend/stream.py share them.
STREAM_KEY = "gateway:spend"
STREAM_FIELD = b"e"
DEAD_LETTER_KEY = "gateway:spend:dead"
REDIS_RETRY_SECONDS = 1.0


class SpendOutbox:
    """Batches spend events to the Redis stream, or keeps them in process (``LocalOutbox``): nothing is lost."""

    def __init__(
        self,
        *,
        redis: RedisTarget | str | None,
        stream_maxlen: int,
        local: LocalOutbox,
        log_interval: float = 10.0,
        min_replicas: int = 0,
        replica_wait_ms: int = 1000,
    ) -> None:
        self.redis = redis_target(redis)
        self.min_replicas = min_replicas
        self.replica_wait_ms = replica_wait_ms
        self.stream_maxlen = stream_maxlen
        self.local = local
        self._pending: list[SpendEvent] = []
        self._scheduled = False
        self._flushing: set[asyncio.Task] = set()
        self._client: aioredis.Redis | None = None
        self._redis_retry_at = 0.0  # after a failed flush, Redis is tried again from this time
        self._log = IntervalLog(logger, interval=log_interval)

    async def __aenter__(self) -> SpendOutbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def emit(self, event: SpendEvent) -> None:
        """Append ``event`` to the outbox and the live feed. Never raises, never waits on Redis or the database."""
        live_publish(event)  # the admin's live page: an in-memory append, sent in batches off the request path
        if self.redis is None:
            self.local.put(event)
            return
        self._pending.append(event)
        if not self._scheduled:
            self._scheduled = True
            task = asyncio.ensure_future(self._flush())
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    def _redis(self) -> aioredis.Redis:
        if self._client is None:  # created on the loop that uses it (a redis.asyncio client must not cross loops)
            self._client = self.redis.async_client(socket_timeout=2.0, socket_connect_timeout=2.0)
        return self._client

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the requests finishing in this tick join the batch
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        if time.monotonic() < self._redis_retry_at:
            self._keep_in_process(batch, "Redis failed the last batch")
            return
        try:
            pipe = self._redis().pipeline(transaction=False)
            for event in batch:
                # orjson serializes the dataclass directly, several times faster than to_json's asdict() walk.
                pipe.xadd(STREAM_KEY, {STREAM_FIELD: orjson.dumps(event)}, maxlen=self.stream_maxlen, approximate=True)
            if self.min_replicas:
                pipe.wait(self.min_replicas, self.replica_wait_ms)
            replies = await pipe.execute()
            if self.min_replicas and replies[-1] < self.min_replicas:
                self._keep_in_process(batch, f"{replies[-1]} of {self.min_replicas} replicas acknowledged")
        except Exception as exc:
            self._redis_retry_at = time.monotonic() + REDIS_RETRY_SECONDS
            self._keep_in_process(batch, f"XADD failed: {exc.__class__.__name__}: {exc}")

    def _keep_in_process(self, batch: list[SpendEvent], why: str) -> None:
        """The ledger still gets every event: the local queue writes them (already on the live page)."""
        for event in batch:
            self.local.put(event)
        self._log.event(
            "in_process",
            f"spend stream unavailable ({why}); batches go to the ledger from this process (this one: {len(batch)})",
        )

    def flush(self, timeout: float = 30.0) -> bool:
        """Block until the local queue is in the ledger (True when nothing is left). Stream events are the workers'."""
        return self.local.flush(timeout)

    @property
    def pending(self) -> int:
        """Events not yet in the stream or the ledger."""
        return len(self._pending) + self.local.pending

    async def close(self, timeout: float = 30.0) -> bool:
        """Write what is queued: the batch of this tick, batches in flight, then the local queue."""
        if self._pending and not self._scheduled:
            self._scheduled = True
            await self._flush()
        while self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except Exception as exc:  # a Redis that is down fails the close too: the events are safe already
                self._log.event("close", f"spend outbox: closing the Redis client failed ({exc.__class__.__name__})")
        written = await asyncio.to_thread(self.local.close, timeout)
        if not written:
            logger.error("spend outbox: %d events not written at shutdown", self.local.pending)
        return written


class LocalOutbox:
    """An in-process queue with one drain thread writing batches through ``spend_ingest_isolating``.

    Cheap for the event loop that feeds it: ``put`` appends under a lock and wakes the thread only when
    the queue goes from empty to non-empty or fills a batch, so a busy worker wakes its writer a few
    times a second, not once per request (every wake-up is a GIL hand-off in the middle of serving).
    The thread lingers ``linger_seconds`` to gather a batch; ``flush()`` cuts the linger short. Batches
    are retried (with backoff) until the database accepts them; ``close()`` (ASGI shutdown) and the exit
    hook registered while the thread runs drain whatever is left, so a clean shutdown is lossless.
    Without Redis there is no beat process: with ``embedded_beat`` the thread runs the periodic jobs.
    """

    batch_size = 500

    def __init__(self, *, linger_seconds: float, embedded_beat: bool) -> None:
        self.linger_seconds = linger_seconds
        self.embedded_beat = embedded_beat
        self._events: deque[SpendEvent] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # the writer waits here for events
        self._idle = threading.Condition(self._lock)  # flush() waits here for the writer
        self._in_flight = 0
        self._hurry = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._exit_hook = False

    def put(self, event: SpendEvent) -> None:
        with self._lock:
            self._in_flight += 1
            self._events.append(event)
            self._stopping = False
            if len(self._events) == 1 or len(self._events) >= self.batch_size:
                self._ready.notify()
            if self._thread is None or not self._thread.is_alive():
                if not self._exit_hook:
                    atexit.register(self._flush_at_exit)
                    self._exit_hook = True
                self._thread = threading.Thread(target=self._run, name="spend-outbox", daemon=True)
                self._thread.start()

    def _take_batch(self, block: bool) -> list[SpendEvent]:
        with self._lock:
            if block and not self._events and not self._stopping:
                self._ready.wait(timeout=1.0)  # (wakes at least once a second for the embedded beat)
            if not self._events:
                return []
            if block and self.linger_seconds > 0:
                deadline = time.monotonic() + self.linger_seconds
                while len(self._events) < self.batch_size and not self._hurry:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._ready.wait(timeout=left)
            self._hurry = False
            take = min(len(self._events), self.batch_size)
            return [self._events.popleft() for _ in range(take)]

    def _write(self, batch: list[SpendEvent]) -> None:
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
        beat = EmbeddedBeat() if self.embedded_beat else None
        while True:
            batch = self._take_batch(block=True)
            if batch:
                self._write(batch)
            if beat is not None:  # no beat process without Redis: run the periodic jobs here
                beat.tick()
            if not batch:
                connection.close()  # a second without events: hold no database connection (this thread's own)
                with self._lock:
                    if self._stopping and not self._events:  # closed: the thread ends (put starts another)
                        self._thread = None
                        return

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

    def close(self, timeout: float = 30.0) -> bool:
        """Flush, then let the writer thread end and drop the exit hook (nothing left for it to do)."""
        written = self.flush(timeout)
        with self._lock:
            self._stopping = True
            self._ready.notify()
            if written and self._exit_hook:
                atexit.unregister(self._flush_at_exit)
                self._exit_hook = False
        return written

    @property
    def pending(self) -> int:
        return self._in_flight

    def _flush_at_exit(self) -> None:
        if self._in_flight and not self.flush(timeout=30.0):
            logger.error("spend outbox: %d events not written at exit", self._in_flight)


def spend_outbox_create() -> SpendOutbox:
    """The one factory: an outbox configured from settings (read here, once). The caller closes it.

    The proxy's lifespan owns one per worker process; other code that appends events (a task, a
    command, a test) opens its own: ``async with spend_outbox_create() as outbox: await outbox.emit(e)``.
    """
    return SpendOutbox(
        redis=settings.REDIS_TARGET,
        stream_maxlen=settings.SPEND_STREAM_MAXLEN,
        local=LocalOutbox(
            linger_seconds=settings.SPEND_LOCAL_OUTBOX_LINGER_SECONDS,
            embedded_beat=settings.SPEND_EMBEDDED_BEAT and settings.REDIS_TARGET is None,
        ),
        log_interval=settings.LOG_EVENT_INTERVAL_SECONDS,
        min_replicas=settings.SPEND_STREAM_MIN_REPLICAS,
        replica_wait_ms=settings.SPEND_STREAM_REPLICA_WAIT_MS,
    )
