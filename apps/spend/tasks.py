"""Celery tasks: thin wrappers that call the spend services. Schedules live in django-celery-beat
(created by ``setup_schedules``, run after ``migrate``) and are editable in the admin."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from apps.spend.models import Report
from apps.spend.partitions import spendlog_partitions_ensure
from apps.spend.reports import report_run, reports_run_due
from apps.spend.services import budget_alerts_send, budget_windows_roll, spend_logs_purge
from apps.spend.stream import stream_drain, stream_forget_idle_consumers


@shared_task(name="spend.ingest", ignore_result=True)
def spend_ingest() -> dict:
    """Drain the spend stream (Redis) into the ledger.

    Without Redis there is no stream and nothing shared to drain: each gateway process writes its own
    events (its outbox's thread, flushed when the process shuts down).
    """
    if settings.REDIS_TARGET is None:
        return {}
    result = stream_drain()
    return {"batches": result.batches, "received": result.received, "inserted": result.inserted}


@shared_task(name="spend.roll_windows", ignore_result=True)
def spend_roll_windows() -> int:
    closed = budget_windows_roll()
    if settings.REDIS_TARGET is not None:
        stream_forget_idle_consumers()
    return closed


@shared_task(name="spend.budget_alerts", ignore_result=True)
def spend_budget_alerts() -> int:
    return len(budget_alerts_send())


@shared_task(name="spend.retention", ignore_result=True)
def spend_retention() -> int:
    return spend_logs_purge()


@shared_task(name="spend.partitions", ignore_result=True)
def spend_partitions() -> list[str]:
    """Create the ledger's coming month partitions (Postgres; nothing to do on SQLite)."""
    return spendlog_partitions_ensure()


@shared_task(name="spend.reports", ignore_result=True)
def spend_reports() -> int:
    return len(reports_run_due())


@shared_task(name="spend.report_run", ignore_result=True)
def spend_report_run(report_id: int, force: bool = True) -> int | None:
    """Run one report now (the admin's "run now" action)."""
    report = Report.objects.filter(pk=report_id).first()
    if report is None:
        return None
    run = report_run(report, force=force)
    return run.pk if run else None
