"""Scheduled deployment probes: a cheap real call per enabled deployment, the latest result kept.

A probe is one chat request for one output token through the proxy's own adapter (connection_probe.py),
so it builds the URL, headers and signature real traffic uses. Probes go around /v1 and the limiter
chain on purpose: they are the gateway's own calls, never counted against a tenant's limits or budgets
and not written to the ledger (their cost, one output token per deployment per interval, is the
operator's). Every deployment is probed concurrently (bounded), so one hanging upstream delays the
run by at most the probe timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.monitoring.connection_probe import ConnectionResult, probe_deployment_async
from apps.monitoring.models import DeploymentProbe
from apps.proxy.models import ModelDeployment

logger = logging.getLogger(__name__)


async def _probe_all(deployments: list, concurrency: int) -> list[ConnectionResult]:
    gate = asyncio.Semaphore(concurrency)

    async def one(deployment) -> ConnectionResult:
        async with gate:
            started = time.perf_counter()
            try:
                return await probe_deployment_async(deployment)
            except Exception as exc:  # one broken deployment must not stop the others' probes; recorded below
                logger.warning("probe of deployment %s failed: %s", deployment.pk, type(exc).__name__)
                return ConnectionResult(False, None, (time.perf_counter() - started) * 1000, type(exc).__name__)

    return await asyncio.gather(*(one(d) for d in deployments))


def deployment_probes_run(*, now=None) -> dict[int, ConnectionResult]:
    """Probe every enabled deployment and store each result; returns them by deployment id."""
    deployments = list(ModelDeployment.objects.filter(enabled=True).order_by("pk"))
    if not deployments:
        return {}
    results = async_to_sync(_probe_all)(deployments, settings.DEPLOYMENT_PROBE_CONCURRENCY)
    now = now or timezone.now()
    by_id = {d.pk: r for d, r in zip(deployments, results, strict=True)}
    with transaction.atomic():
        previous = dict(
            DeploymentProbe.objects.filter(deployment_id__in=by_id).values_list("deployment_id", "consecutive_failures")
        )
        still_there = set(ModelDeployment.objects.filter(pk__in=by_id).values_list("pk", flat=True))
        rows = [
            DeploymentProbe(
                deployment_id=deployment_id,
                ok=result.ok,
                status=result.status,
                latency_ms=round(result.latency_ms, 1),
                detail=result.detail[:250],
                probed_at=now,
                consecutive_failures=0 if result.ok else previous.get(deployment_id, 0) + 1,
            )
            for deployment_id, result in by_id.items()
            if deployment_id in still_there  # deleted while it was probed
        ]
        # One upsert: two runs at once (the embedded beat of several workers) cannot collide on a new row.
        DeploymentProbe.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["deployment"],
            update_fields=["ok", "status", "latency_ms", "detail", "probed_at", "consecutive_failures"],
        )
    return by_id
