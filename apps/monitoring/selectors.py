"""Monitoring reads: fresh probe results."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from apps.monitoring.models import DeploymentProbe


def probe_fresh_after(now: datetime | None = None) -> datetime:
    """Probes older than three intervals are stale (beat stopped, or the deployment was off): ignored."""
    return (now or timezone.now()) - timedelta(seconds=3 * settings.DEPLOYMENT_PROBE_INTERVAL_SECONDS)


def latest_probes(deployment_ids: list[int], *, now: datetime | None = None) -> dict[int, DeploymentProbe]:
    """The fresh probe of each deployment that has one (no tenant filter: the caller chose the deployments)."""
    rows = DeploymentProbe.objects.filter(deployment_id__in=deployment_ids, probed_at__gte=probe_fresh_after(now))
    return {row.deployment_id: row for row in rows}
