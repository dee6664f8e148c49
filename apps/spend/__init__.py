"""Spend: the exact ledger, daily aggregates, budget-window totals, alerts and scheduled reports.

Path of one request's spend:
  proxy ``await outbox.emit(event)`` (outbox.py: one ``SpendOutbox`` per gateway, batched) -> Redis
  stream ``gateway:spend`` (or, without Redis, its in-process queue + thread) -> Celery ``spend.ingest``
  every 2 s (stream.py: consumer group, XAUTOCLAIM for dead consumers) -> ingest.py: one transaction
  per batch, ledger insert skipping known request ids, aggregates moved only by new rows -> XACK+XDEL
  after commit. The rows a batch added go, once committed, to ``settings.SPEND_INGESTED_HOOKS`` (the log
  sinks of apps/sinks).

Reads: selectors.py (``window_spent`` seeds lost Redis budget counters, ``key_usage`` for
``/v1/key/info``, ``spend_summary``), api.py (``/api/v1/spend/logs/``, ``/api/v1/spend/summary/``).
Jobs (tasks.py, scheduled by schedules.py in django-celery-beat): window roll, budget alerts,
retention, reports (reports.py). ``manage.py spend_rebuild_totals`` recomputes totals from the ledger.
"""
