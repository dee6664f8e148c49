"""The periodic jobs, created in django-celery-beat's tables (editable in the admin afterwards).

``schedules_setup()`` runs after every ``migrate`` (post_migrate) and from ``manage.py setup_schedules``;
it creates missing entries and never overwrites what an admin changed. Spend's jobs are listed here;
an app above spend (apps/monitoring) lists its own as its AppConfig's ``periodic_tasks``, which this
module collects without importing that app.
"""

from __future__ import annotations

from django.apps import apps
from django.db import connection
from django.db.models import Max
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from apps.spend.partitions import spendlog_partitions_ensure

SCHEDULES = [
    # name, task, every (seconds) or crontab fields, expires (seconds)
    ("spend: ingest outbox", "spend.ingest", {"every": 2}, 10),
    ("spend: roll budget windows", "spend.roll_windows", {"every": 60}, 60),
    ("spend: budget alerts", "spend.budget_alerts", {"every": 60}, 60),
    ("spend: retention", "spend.retention", {"crontab": {"minute": "17", "hour": "3"}}, 3600),
    ("spend: ledger partitions", "spend.partitions", {"crontab": {"minute": "47", "hour": "2"}}, 3600),
    ("spend: scheduled reports", "spend.reports", {"crontab": {"minute": "5", "hour": "*"}}, 3600),
]


def all_schedules() -> list[tuple[str, str, dict, int]]:
    """Spend's jobs and every installed app's ``periodic_tasks``."""
    entries = list(SCHEDULES)
    for config in apps.get_app_configs():
        entries.extend(getattr(config, "periodic_tasks", None) or [])
    return entries


def schedules_setup() -> int:
    """Create the missing periodic tasks; returns how many were created."""
    return schedules_create(all_schedules())


def schedules_create(schedules: list[tuple[str, str, dict, int]]) -> int:
    """Create the entries of ``schedules`` that do not exist yet (other apps' jobs use this too)."""
    created = 0
    for name, task, when, expires in schedules:
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        kwargs: dict = {"name": name, "task": task, "expire_seconds": expires}
        if "every" in when:
            kwargs["interval"], _ = IntervalSchedule.objects.get_or_create(
                every=when["every"], period=IntervalSchedule.SECONDS
            )
        else:
            fields = {"minute": "*", "hour": "*", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"}
            fields.update(when["crontab"])
            kwargs["crontab"], _ = CrontabSchedule.objects.get_or_create(timezone="UTC", **fields)
        PeriodicTask.objects.create(**kwargs)
        created += 1
    return created


def setup_after_migrate(sender, **kwargs) -> None:
    """post_migrate hook: only once the beat tables exist (apps migrate in any order)."""
    using = kwargs.get("using", "default")
    if using != "default":
        return
    # The months ahead exist from the first migrate on, not only after the daily job's first run.
    spendlog_partitions_ensure()
    if tables_ready():
        schedules_setup()


def tables_ready() -> bool:
    """Whether django-celery-beat's tables exist (apps migrate in any order)."""
    tables = connection.introspection.table_names()
    return "django_celery_beat_periodictask" in tables and "django_celery_beat_crontabschedule" in tables


def beat_last_dispatch():
    """When beat last sent any enabled periodic task (None: never), for the beat process's liveness check.

    django-celery-beat's DatabaseScheduler writes ``last_run_at`` back at least every 3 minutes while it
    runs, and the ingest schedule fires every 2 s, so a beat that stopped dispatching shows as an old value.
    """
    return PeriodicTask.objects.filter(enabled=True).aggregate(last=Max("last_run_at"))["last"]
