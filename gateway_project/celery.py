"""The Celery app: ``celery -A gateway_project worker`` (spend ingestion, alerts, reports) and ``beat``.

Configuration comes from Django settings (``CELERY_*``): Redis as the broker when ``REDIS_URL`` is
set, eager tasks otherwise; beat reads its schedule from django-celery-beat's tables (created by
``setup_schedules`` after ``migrate``, editable in the admin). Tasks live in each app's ``tasks.py``.
"""

import os

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from gateway_project.tracing import celery_tracing_setup

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings.local")

app = Celery("gateway_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect(weak=False)
def _trace_tasks(**_kwargs) -> None:
    """Each worker process (prefork child, or the solo pool's one) traces its tasks when tracing is on, and
    exports what is queued when it stops (a prefork child ends without running atexit hooks)."""
    provider = celery_tracing_setup()
    if provider is not None:
        worker_process_shutdown.connect(lambda **_: provider.shutdown(), weak=False)
