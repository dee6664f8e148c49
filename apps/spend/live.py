"""Live traffic feed: finished requests, pushed to the admin's live page over the channel layer.

The outbox calls ``live_publish(event)`` for every finished /v1 request. That only appends a small
row to an in-process buffer (no I/O on the request path); a background task on the same event loop
flushes the buffer every ``LIVE_FLUSH_SECONDS`` with one ``group_send`` to the single feed group
(chunked), so with the Redis channel layer the cost is about one round trip per flush, however many
tenants the rows belong to and whether or not anybody watches.

Each websocket consumer (apps/teams/consumers.py) filters the feed by its viewer's tenancy before a
row reaches the browser, with the same rules as apps/teams/scoping.py. A row never carries the key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import channels.layers
from asgiref.sync import async_to_sync

from apps.spend.events import SpendEvent

logger = logging.getLogger(__name__)

LIVE_FLUSH_SECONDS = 0.25
LIVE_BUFFER_MAX = 5000  # beyond this (nobody flushing?) the oldest rows are dropped, never the request
LIVE_ROWS_PER_MESSAGE = 200
WARN_EVERY_SECONDS = 60.0
FEED_GROUP = "live.feed"


def live_row(event: SpendEvent) -> dict[str, Any]:
    """What the live page shows about one request: no key, no prompt, no metadata."""
    return {
        "request_id": event.request_id,
        "time": event.created_at,
        "key_alias": event.key_alias or (f"key #{event.key_id}" if event.key_id else "master key"),
        "model": event.model,
        "provider": event.llm_provider,
        "route": event.route,
        "status": event.status,
        "latency_ms": round(event.latency_ms, 1),
        "cost": event.cost,
        "tokens": event.prompt_tokens + event.completion_tokens,
        "limit_type": event.limit_type,
        "error_type": event.error_type,
        "organization_id": event.organization_id,
        "team_id": event.team_id,
        "user_id": event.user_id,
    }


class LivePublisher:
    """Per-process buffer plus one flushing task on the running loop (re-created if the loop changes)."""

    def __init__(self, flush_seconds: float = LIVE_FLUSH_SECONDS, buffer_max: int = LIVE_BUFFER_MAX) -> None:
        self.flush_seconds = flush_seconds
        self._buffer: deque[dict[str, Any]] = deque(maxlen=buffer_max)
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dropped = 0
        self._warned_at = -WARN_EVERY_SECONDS

    def publish(self, event: SpendEvent) -> None:
        """Queue one finished request; never raises into the request path."""
        try:
            self._buffer.append(live_row(event))
            self._ensure_flusher()
        except Exception:  # the feed is cosmetic: never fail a request over it, but say so
            logger.exception("live feed: could not queue a row")

    def _ensure_flusher(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Called from a thread without a loop (e.g. eager Celery in a sync view): flush right away.
            self._flush_sync()
            return
        if self._task is None or self._task.done() or self._loop is not loop:
            self._loop = loop
            self._task = loop.create_task(self._flush_forever(), name="live-feed-flush")

    async def _flush_forever(self) -> None:
        idle = 0
        while idle < 40:  # stop after ~10 s without traffic; the next publish restarts it
            await asyncio.sleep(self.flush_seconds)
            if self._buffer:
                idle = 0
                await self.flush()
            else:
                idle += 1

    def _drain(self) -> list[dict[str, Any]]:
        rows = list(self._buffer)
        self._buffer.clear()
        return rows

    async def flush(self) -> int:
        """Send what is buffered; returns the number of messages sent."""
        layer = channels.layers.get_channel_layer()  # looked up per flush: settings and tests swap the layer
        rows = self._drain()
        if layer is None or not rows:
            return 0
        sent = 0
        for start in range(0, len(rows), LIVE_ROWS_PER_MESSAGE):
            chunk = rows[start : start + LIVE_ROWS_PER_MESSAGE]
            try:
                await layer.group_send(FEED_GROUP, {"type": "live.rows", "rows": chunk})
                sent += 1
            except Exception:
                self._dropped += len(chunk)
                if time.monotonic() - self._warned_at > WARN_EVERY_SECONDS:  # a dead layer: say so, don't flood
                    self._warned_at = time.monotonic()
                    logger.warning("live feed: channel layer unavailable, %d rows dropped so far", self._dropped)
        return sent

    def _flush_sync(self) -> None:
        async_to_sync(self.flush)()


live_publisher = LivePublisher()


def live_publish(event: SpendEvent) -> None:
    """Hook for apps/spend/outbox.SpendOutbox.emit: cheap, synchronous, never raises."""
    live_publisher.publish(event)
