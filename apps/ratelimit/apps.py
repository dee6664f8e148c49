import atexit
import os

from django.apps import AppConfig


class RatelimitConfig(AppConfig):
    name = "apps.ratelimit"
    label = "ratelimit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the gateway's metrics at startup so /metrics lists them before the first /v1 request.
        from apps.ratelimit import metrics  # noqa: F401

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # A worker that exits takes its live gauges (in-flight) with it instead of leaving them summed.
            from prometheus_client import multiprocess

            atexit.register(multiprocess.mark_process_dead, os.getpid())
