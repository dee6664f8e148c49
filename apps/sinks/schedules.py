"""The delivery job in django-celery-beat's tables, created after ``migrate`` like the spend jobs."""

from __future__ import annotations

from apps.spend.schedules import schedules_create, tables_ready

SCHEDULES = [("sinks: deliver log records", "sinks.deliver", {"every": 2}, 10)]


def schedules_setup() -> int:
    return schedules_create(SCHEDULES)


def setup_after_migrate(sender, **kwargs) -> None:
    if kwargs.get("using", "default") == "default" and tables_ready():
        schedules_setup()
