"""The Celery app: ``celery -A gateway_project worker`` (spend ingestion, alerts, reports) and ``beat``.

Configuration comes from Django settings (``CELERY_*``): Redis as the broker when ``REDIS_URL`` is
set, eager tasks otherwise; beat reads its schedule from django-celery-beat's tables (created by
``setup_schedules`` after ``migrate``, editable in the admin). Tasks live in each app's ``tasks.py``.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings.local")

app = Celery("gateway_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
