"""Celery tasks: thin wrappers over the monitoring services (schedules: MonitoringConfig.periodic_tasks)."""

from __future__ import annotations

from celery import shared_task

from apps.monitoring.probes import deployment_probes_run
from apps.monitoring.services import alerts_evaluate


@shared_task(name="monitoring.probe_deployments", ignore_result=True)
def monitoring_probe_deployments() -> dict:
    results = deployment_probes_run()
    return {"probed": len(results), "failed": sum(1 for r in results.values() if not r.ok)}


@shared_task(name="monitoring.evaluate_alerts", ignore_result=True)
def monitoring_evaluate_alerts() -> int:
    return len(alerts_evaluate())
