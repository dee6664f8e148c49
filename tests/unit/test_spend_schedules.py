"""The periodic jobs exist after migrate, are created once, and keep what an admin changed."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from apps.spend.schedules import all_schedules, schedules_setup

pytestmark = pytest.mark.django_db


def test_migrate_created_every_job_of_spend_and_monitoring():
    names = set(PeriodicTask.objects.values_list("task", flat=True))
    assert {task for _, task, _, _ in all_schedules()} <= names
    assert {"spend.budget_alerts", "monitoring.probe_deployments", "monitoring.evaluate_alerts"} <= names


def test_setup_is_idempotent_and_keeps_admin_edits():
    ingest = PeriodicTask.objects.get(task="spend.ingest")
    ingest.enabled = False
    ingest.save()
    assert schedules_setup() == 0
    call_command("setup_schedules", stdout=io.StringIO())
    assert PeriodicTask.objects.filter(task="spend.ingest").count() == 1
    assert PeriodicTask.objects.get(task="spend.ingest").enabled is False


def test_a_deleted_job_comes_back():
    PeriodicTask.objects.filter(task="spend.retention").delete()
    assert schedules_setup() == 1
    assert PeriodicTask.objects.get(task="spend.retention").crontab.hour == "3"


def test_every_scheduled_task_is_registered_with_celery():
    from gateway_project.celery import app

    app.loader.import_default_modules()
    for _, task, _, _ in all_schedules():
        assert task in app.tasks, task


def beat_health(max_age: int = 600) -> str:
    out = io.StringIO()
    call_command("beat_health", "--max-age", str(max_age), stdout=out)
    return out.getvalue()


def test_beat_health_fails_until_beat_dispatched_something():
    from django.core.management.base import CommandError

    PeriodicTask.objects.update(last_run_at=None)
    with pytest.raises(CommandError, match="not dispatched any periodic task yet"):
        beat_health()


def test_beat_health_passes_while_beat_dispatches_and_fails_once_it_stopped():
    from datetime import timedelta

    from django.core.management.base import CommandError
    from django.utils import timezone

    PeriodicTask.objects.update(last_run_at=timezone.now() - timedelta(hours=2))
    PeriodicTask.objects.filter(task="spend.ingest").update(last_run_at=timezone.now() - timedelta(seconds=30))
    assert "dispatched a periodic task 30 s ago" in beat_health()

    PeriodicTask.objects.filter(task="spend.ingest").update(last_run_at=timezone.now() - timedelta(seconds=900))
    with pytest.raises(CommandError, match="900 s ago"):
        beat_health()
    # A disabled task's old run time proves nothing about beat now.
    PeriodicTask.objects.filter(task="spend.ingest").update(last_run_at=timezone.now(), enabled=False)
    with pytest.raises(CommandError, match="ago"):
        beat_health()
