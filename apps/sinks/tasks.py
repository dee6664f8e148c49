"""Celery task: thin, calls the delivery service (scheduled every 2 s by schedules.py)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from apps.sinks.dispatch import sinks_deliver


@shared_task(name="sinks.deliver", ignore_result=True)
def sinks_deliver_task() -> dict:
    """Without Redis there are no sink queues (records are not queued either): nothing to do."""
    if settings.REDIS_TARGET is None:
        return {}
    result = sinks_deliver()
    return {"sinks": result.sinks, "delivered": result.delivered, "dropped": result.dropped}
