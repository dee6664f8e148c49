import atexit
import os

from django.apps import AppConfig


class RatelimitConfig(AppConfig):
    name = "apps.ratelimit"
    label = "ratelimit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        multiproc_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if multiproc_dir:
            # Gauges without labels write their file at import: a directory that does not exist yet (a fresh
            # container's tmpfs, a one-off manage.py command) must not stop the process from starting.
            os.makedirs(multiproc_dir, exist_ok=True)
        # Register the gateway's metrics at startup so /metrics lists them before the first /v1 request.
        from apps.ratelimit import metrics  # noqa: F401

        if multiproc_dir:
            # A worker that exits takes its live gauges (in-flight) with it instead of leaving them summed.
            from prometheus_client import multiprocess

            atexit.register(multiprocess.mark_process_dead, os.getpid())
