"""Spend events leave the worker in batches: one pipelined XADD per event-loop tick, not one per request.

Events of requests that finish in the same loop iteration are coalesced and written with a single
Redis round trip to the spend outbox's stream (same stream, fields and cap as ``spend_emit``).
Nothing waits: the flush runs as soon as the loop is free, so at low load an event leaves within
microseconds and under load many leave together. A failed flush hands its events to the in-process
outbox, which writes them to the ledger directly (the UNIQUE request id makes it harmless when a timed-out
XADD was applied after all), and for ``REDIS_RETRY_SECONDS`` later batches go there too instead of
piling up connections on a Redis that does not answer. One log line per interval says how many batches
and events took that way (a 3 s outage once logged 2,647 tracebacks here). Without Redis events go
straight to ``spend_emit``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from apps.common.intervallog import IntervalLog
from apps.spend.events import SpendEvent
from apps.spend.live import live_publish

logger = logging.getLogger(__name__)
_log = IntervalLog(logger, interval=10.0)
REDIS_RETRY_SECONDS = 1.0


class SpendBatcher:
    def __init__(self, *, redis_url: str) -> None:
        self.redis_url = redis_url
        self._pending: list[SpendEvent] = []
        self._scheduled = False
        self._flushing: set[asyncio.Task] = set()
        self._client = None
        self._redis_retry_at = 0.0  # after a failed flush, Redis is tried again from this time

    async def emit(self, event: SpendEvent) -> None:
        if not self.redis_url:
            from apps.spend.outbox import spend_emit

            await spend_emit(event)
            return
        live_publish(event)  # the admin's live page: an in-memory append, sent in batches off the request path
        self._pending.append(event)
        if not self._scheduled:
            self._scheduled = True
            task = asyncio.ensure_future(self._flush())
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    @staticmethod
    def _maxlen() -> int:
        from django.conf import settings

        from apps.spend.outbox import DEFAULT_STREAM_MAXLEN

        return int(getattr(settings, "SPEND_STREAM_MAXLEN", DEFAULT_STREAM_MAXLEN))

    def _redis(self):
        if self._client is None:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(self.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return self._client

    async def _flush(self) -> None:
        from apps.spend.outbox import STREAM_FIELD, STREAM_KEY

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
            maxlen = self._maxlen()
            for event in batch:
                # What outbox_pipeline_add writes (same stream, field and cap); orjson serializes the
                # dataclass directly, several times faster than SpendEvent.to_json's asdict() walk.
                pipe.xadd(STREAM_KEY, {STREAM_FIELD: orjson.dumps(event)}, maxlen=maxlen, approximate=True)
            await pipe.execute()
        except Exception as exc:
            self._redis_retry_at = time.monotonic() + REDIS_RETRY_SECONDS
            self._keep_in_process(batch, f"XADD failed: {exc.__class__.__name__}: {exc}")

    @staticmethod
    def _keep_in_process(batch: list[SpendEvent], why: str) -> None:
        """The ledger still gets every event: the in-process outbox writes them (already on the live page)."""
        from apps.spend.outbox import local_outbox

        outbox = local_outbox()
        for event in batch:
            outbox.put(event)
        _log.event(
            "in_process",
            f"spend stream unavailable ({why}); batches go to the ledger from this process (this one: {len(batch)})",
        )

    async def close(self) -> None:
        """Flush what is queued (lifespan shutdown)."""
        if self._pending and not self._scheduled:
            self._scheduled = True
            await self._flush()
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
