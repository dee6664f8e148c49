"""Fan-out and delivery, both in Celery workers: rows in from ingestion, batches out to each sink.

``sinks_enqueue`` is the spend ingestion's hook (``settings.SPEND_INGESTED_HOOKS``): it runs after a
batch's ledger transaction committed, with the rows that were new, and costs one query (the enabled
sinks) plus one pipelined Redis round trip. It never raises into ingestion: Redis down means the batch's
records are dropped for the sinks and counted (reason ``redis_unavailable``), the ledger is untouched.

``sinks_deliver`` (task ``sinks.deliver``, every 2 s) sends each due sink's queue in batches, sinks in
parallel threads so a slow or hanging endpoint delays only itself (each send is bounded by
``SINKS_TIMEOUT_SECONDS``, a run by ``SINKS_DELIVER_MAX_SECONDS``). Threads do network and Redis work
only; the database is written by the calling thread afterwards.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import redis
import urllib3
from django.conf import settings

from apps.common.intervallog import IntervalLog
from apps.common.redis_target import RedisTarget
from apps.sinks import metrics
from apps.sinks.queue import SinkQueues
from apps.sinks.records import record_json
from apps.sinks.selectors import Deliverable, SinkRoute, sink_routes, sink_targets
from apps.sinks.services import log_sink_status_record
from apps.sinks.transports import DeliveryError, SinkTarget, http, langfuse, s3
from apps.spend.stream import redis_client

logger = logging.getLogger(__name__)

TRANSPORTS = {"http": http.send, "langfuse": langfuse.send, "s3": s3.send}
MAX_PARALLEL_SINKS = 4


@lru_cache(maxsize=2)
def _queues(target: RedisTarget, capacity: int) -> SinkQueues:
    """One client (and its connection pool) per worker process; redis-py resets the pool after a fork."""
    return SinkQueues(redis_client(), capacity=capacity)


def sink_queues() -> SinkQueues:
    return _queues(settings.REDIS_TARGET, settings.SINKS_QUEUE_MAX_RECORDS)


@lru_cache(maxsize=1)
def _enqueue_log() -> IntervalLog:
    """One folded log line per interval while Redis refuses the sinks' records (not one per batch)."""
    return IntervalLog(logger, interval=settings.LOG_EVENT_INTERVAL_SECONDS)


# --- in: the ingestion hook ---------------------------------------------------------------------


def sinks_enqueue(rows: Iterable[Any]) -> None:
    """Queue each new ledger row's record for every enabled sink that takes it (its organization or team)."""
    rows = list(rows)
    if not rows or settings.REDIS_TARGET is None:
        return
    routes = sink_routes()
    if not routes:
        return
    kinds = {route.id: route.kind for route in routes}
    by_organization: dict[int, list[SinkRoute]] = {}
    for route in routes:
        by_organization.setdefault(route.organization_id, []).append(route)
    batches: dict[int, list[bytes]] = {}
    for row in rows:
        plain = full = None
        for route in by_organization.get(row.organization_id, ()):
            if not route.takes(row.organization_id, row.team_id):
                continue
            if route.capture_bodies:
                full = full or record_json(row, capture_bodies=True)
                batches.setdefault(route.id, []).append(full)
            else:
                plain = plain or record_json(row)
                batches.setdefault(route.id, []).append(plain)
    if not batches:
        return
    try:
        dropped = sink_queues().push(batches)
        reason = "queue_full"
    except redis.RedisError as exc:
        dropped = {sink_id: len(records) for sink_id, records in batches.items()}
        reason = "redis_unavailable"
        message = f"log sinks: Redis refused the records of an ingested batch ({exc.__class__.__name__})"
        _enqueue_log().event("enqueue", message)
    for sink_id, count in dropped.items():
        metrics.DROPPED.labels(kinds[sink_id], reason).inc(count)
        log_sink_status_record(sink_id=sink_id, dropped=count, error=f"{count} records dropped: {reason}")


# --- out: delivery ------------------------------------------------------------------------------


@dataclass(slots=True)
class SinkOutcome:
    sink_id: int
    kind: str
    delivered: int = 0
    dropped: int = 0
    failures: int = 0
    succeeded: bool = False
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class DeliverResult:
    sinks: int = 0
    delivered: int = 0
    dropped: int = 0
    failures: int = 0


def backoff_seconds(attempts: int) -> float:
    """Exponential backoff with jitter: base * 2^(attempts-1), capped, then a random point of its upper half."""
    delay = min(settings.SINKS_BACKOFF_MAX_SECONDS, settings.SINKS_BACKOFF_SECONDS * 2 ** (attempts - 1))
    return random.uniform(delay / 2, delay)  # noqa: S311 (spreading retries, not a secret)


def _send(target: SinkTarget, records: list[bytes], pool: urllib3.PoolManager) -> str:
    try:
        return TRANSPORTS[target.kind](target, records, pool)
    except DeliveryError:
        raise
    except Exception as exc:  # a bug or a malformed record must fail this batch, not the whole run
        logger.exception("log sink %s: sending a batch failed unexpectedly", target.id)
        raise DeliveryError(f"{type(exc).__name__} while sending") from None


def _deliver_one(item: Deliverable, queues: SinkQueues, pool: urllib3.PoolManager, deadline: float) -> SinkOutcome:
    """Send one sink's queue, batch by batch, until it is empty, a batch fails, or the run's time is up."""
    target = item.target
    outcome = SinkOutcome(target.id, target.kind)
    token = queues.lease(target.id, target.timeout * 2 + 5)
    if token is None:
        return outcome  # another worker is delivering this sink right now
    try:
        while time.monotonic() < deadline:
            state = queues.retry_state(target.id)
            if state.retry_at > time.time():
                break
            records = queues.head(target.id, item.batch_size)
            if not records:
                break
            try:
                note = _send(target, records, pool)
            except DeliveryError as exc:
                attempts = state.attempts + 1
                outcome.failures += 1
                if attempts >= settings.SINKS_MAX_ATTEMPTS:
                    queues.done(target.id, len(records))
                    outcome.dropped += len(records)
                    outcome.errors.append(f"{exc} (gave up after {attempts} attempts, {len(records)} records dropped)")
                else:
                    queues.failed(target.id, attempts=attempts, retry_in=backoff_seconds(attempts))
                    outcome.errors.append(f"{exc} (attempt {attempts} of {settings.SINKS_MAX_ATTEMPTS})")
                break
            queues.done(target.id, len(records))
            outcome.delivered += len(records)
            outcome.succeeded = True
            if note:
                outcome.errors.append(note)
    finally:
        queues.release(target.id, token)
    return outcome


def sinks_deliver(*, max_seconds: float | None = None) -> DeliverResult:
    """Deliver what every enabled sink has queued; returns the totals of this run."""
    queues = sink_queues()
    deliverable, undecryptable = sink_targets()
    for sink_id in undecryptable:
        log_sink_status_record(sink_id=sink_id, error="the secret cannot be decrypted with GATEWAY_ENCRYPTION_KEYS")
    now = time.time()
    due = [d for d in deliverable if queues.length(d.target.id) and queues.retry_state(d.target.id).retry_at <= now]
    result = DeliverResult(sinks=len(due))
    if not due:
        return result
    max_seconds = settings.SINKS_DELIVER_MAX_SECONDS if max_seconds is None else max_seconds
    deadline = time.monotonic() + max_seconds
    with (
        urllib3.PoolManager(num_pools=16, maxsize=MAX_PARALLEL_SINKS) as pool,
        ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_SINKS, len(due)), thread_name_prefix="sink") as executor,
    ):
        outcomes = list(executor.map(lambda item: _deliver_one(item, queues, pool, deadline), due))
    for outcome in outcomes:
        if outcome.delivered:
            metrics.DELIVERED.labels(outcome.kind).inc(outcome.delivered)
        if outcome.dropped:
            metrics.DROPPED.labels(outcome.kind, "retries_exhausted").inc(outcome.dropped)
        if outcome.failures:
            metrics.FAILURES.labels(outcome.kind).inc(outcome.failures)
            logger.warning("log sink %s: %s", outcome.sink_id, outcome.errors[-1])
        log_sink_status_record(
            sink_id=outcome.sink_id,
            delivered=outcome.delivered,
            dropped=outcome.dropped,
            succeeded=outcome.succeeded,
            error=outcome.errors[-1] if outcome.errors else "",
        )
        result.delivered += outcome.delivered
        result.dropped += outcome.dropped
        result.failures += outcome.failures
    return result
