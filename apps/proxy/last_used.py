"""``VirtualKey.last_used_at``: written at most once a minute per key, off the request path.

``touch()`` is a dict lookup; when a key has not been recorded for a minute it is queued, and one
background write (on the proxy's database thread) updates every queued key with a single UPDATE
that also skips rows another worker touched within the minute.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import timedelta

from django.utils import timezone

from apps.keys.models import VirtualKey

logger = logging.getLogger(__name__)

GRANULARITY_SECONDS = 60.0


def _write(key_ids: list[int]) -> None:
    now = timezone.now()
    stale_before = now - timedelta(seconds=GRANULARITY_SECONDS)
    VirtualKey.objects.filter(pk__in=key_ids).exclude(last_used_at__gte=stale_before).update(last_used_at=now)


class LastUsedRecorder:
    def __init__(self, *, run_sync: Callable) -> None:
        self._run_sync = run_sync
        self._recorded: dict[int, float] = {}
        self._pending: set[int] = set()
        self._task: asyncio.Task | None = None

    def touch(self, key_id: int) -> None:
        now = time.monotonic()
        if now - self._recorded.get(key_id, -GRANULARITY_SECONDS) < GRANULARITY_SECONDS:
            return
        self._recorded[key_id] = now
        self._pending.add(key_id)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self.flush())

    async def flush(self) -> None:
        if not self._pending:
            return
        key_ids, self._pending = sorted(self._pending), set()
        try:
            await self._run_sync(_write, key_ids)
        except Exception:
            logger.exception("last_used_at update failed for %d keys", len(key_ids))
