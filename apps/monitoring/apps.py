from collections.abc import Callable

from django.apps import AppConfig
from django.conf import settings


class MonitoringConfig(AppConfig):
    name = "apps.monitoring"
    label = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    @property
    def periodic_tasks(self) -> list[tuple[str, str, dict, int]]:
        """Read by ``apps.spend.schedules.schedules_setup`` (name, task, when, expires), like spend's own."""
        every = settings.DEPLOYMENT_PROBE_INTERVAL_SECONDS
        return [
            ("monitoring: deployment probes", "monitoring.probe_deployments", {"every": every}, every),
            ("monitoring: alerts", "monitoring.evaluate_alerts", {"every": 60}, 60),
        ]

    @property
    def embedded_jobs(self) -> list[tuple[str, float, Callable[[], object]]]:
        """Read by ``apps.spend.embedded.EmbeddedBeat`` (no Redis, no beat process): the same two jobs."""
        # Imported when asked (after setup): both import models, which cannot load when apps.py does.
        from apps.monitoring.probes import deployment_probes_run  # (see the line above)
        from apps.monitoring.services import alerts_evaluate  # (see the line above)

        return [
            ("deployment probes", float(settings.DEPLOYMENT_PROBE_INTERVAL_SECONDS), deployment_probes_run),
            ("alerts", 60.0, alerts_evaluate),
        ]
