"""The periodic jobs exist after migrate, are created once, and keep what an admin changed."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django_celery_beat.models import PeriodicTask

from apps.spend.schedules import SCHEDULES, schedules_setup

pytestmark = pytest.mark.django_db


def test_migrate_created_every_spend_job():
    names = set(PeriodicTask.objects.values_list("task", flat=True))
    assert {task for _, task, _, _ in SCHEDULES} <= names


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
    for _, task, _, _ in SCHEDULES:
        assert task in app.tasks, task
