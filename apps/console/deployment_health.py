"""Deployment health for the admin: per model group, each deployment's state, recent errors and latency.

Two views combined: recent traffic from the spend ledger (apps/monitoring/traffic.py: every finished
request names its deployment, so the page shows the same truth as the bills), and the latest scheduled
probe (apps/monitoring/probes.py), which knows a deployment's state without any traffic. Cooldown and
in-flight requests are the router's live state in the worker serving the page
(``apps.proxy.app.router_health``); with Redis, cooldowns are shared by all workers
(``apps.proxy.cooldown_sync``), so the page also reads the stored ones and shows the longer of the two.
Where neither is known the page says so rather than guessing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from statistics import median

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.utils import timezone

from apps.monitoring.connection_probe import ConnectionResult, probe_deployment
from apps.monitoring.models import DeploymentProbe
from apps.monitoring.selectors import latest_probes
from apps.monitoring.traffic import recent_stats
from apps.proxy.cooldown_sync import shared_cooldowns_left
from apps.proxy.models import ModelDeployment, ModelGroup
from apps.spend.models import SpendLog
from apps.teams.audit import Actor, audit_record
from apps.teams.scoping import CHANGE, VIEW

logger = logging.getLogger(__name__)

RECENT_MINUTES = 15


@dataclass
class DeploymentHealth:
    deployment: object
    requests: int = 0
    errors: int = 0
    p50_latency_ms: float | None = None
    max_latency_ms: float | None = None
    last_error: str = ""
    last_error_at: object = None
    cooldown_seconds: float | None = None
    in_flight: int | None = None
    may_test: bool = False
    probe: DeploymentProbe | None = None  # the latest fresh scheduled probe, if any

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def state(self) -> str:
        """disabled, cooldown, failing (the latest probe failed), degraded (recent traffic fails too often),
        ok (traffic or a probe says so) or idle (nothing known).

        Any failed share at or over DEPLOYMENT_DEGRADED_ERROR_RATE of at least
        DEPLOYMENT_DEGRADED_MIN_REQUESTS requests is degraded: 3 of 3 failed is never "ok".
        """
        if not self.deployment.enabled:
            return "disabled"
        if self.cooldown_seconds:
            return "cooldown"
        if self.probe is not None and not self.probe.ok:
            return "failing"
        enough = self.requests >= settings.DEPLOYMENT_DEGRADED_MIN_REQUESTS
        if enough and self.errors and self.error_rate >= settings.DEPLOYMENT_DEGRADED_ERROR_RATE:
            return "degraded"
        return "ok" if self.requests or self.probe is not None else "idle"


@dataclass
class GroupHealth:
    model_name: str
    strategy: str
    fallbacks: list[str]
    deployments: list[DeploymentHealth] = field(default_factory=list)
    cooldown_known: bool = False
    cooldown_shared: bool = False


def _deployments(user, action: str = VIEW):
    return ModelDeployment.objects.restrict(user, action)


def groups_for(user) -> list[dict]:
    """Model groups the user can see, with how many deployments (enabled) each has."""
    rows = (
        _deployments(user)
        .values("model_name")
        .annotate(n=Count("pk"), on=Count("pk", filter=Q(enabled=True)))
        .order_by("model_name")
    )
    return [{"model_name": r["model_name"], "deployments": r["n"], "enabled": r["on"]} for r in rows]


def _router_health() -> dict[int, dict] | None:
    """This worker's router state per deployment (cooldown, in-flight), or None if no proxy runs here."""
    try:
        # Lazy: the /v1 app builds its gateway (metrics, pools) at import; only this page's worker needs it.
        from apps.proxy.app import router_health
    except ImportError:
        return None
    try:
        return router_health() or None
    except Exception:  # read from another thread while requests run: report unknown rather than fail the page
        logger.warning("deployment health: reading the router's state failed", exc_info=True)
        return None


def _shared_cooldowns(deployment_ids: list[int]) -> dict[int, float] | None:
    """Cooldowns any worker announced through Redis (seconds left), or None without Redis or if unreadable."""
    if settings.REDIS_TARGET is None:
        return None
    try:
        return shared_cooldowns_left(settings.REDIS_TARGET, deployment_ids)
    except Exception as exc:  # the page still shows traffic and this worker's state
        logger.warning("deployment health: reading shared cooldowns failed (%s)", type(exc).__name__)
        return None


def _cooldown(router: dict[int, dict] | None, shared: dict[int, float] | None, pk: int) -> float | None:
    known = [v for v in ((router or {}).get(pk, {}).get("cooling_down_seconds"), (shared or {}).get(pk)) if v]
    return max(known) if known else None


def group_health(user, model_name: str) -> GroupHealth | None:
    deployments = list(_deployments(user).filter(model_name=model_name).order_by("priority", "pk"))
    if not deployments:
        return None
    settings_row = ModelGroup.objects.filter(model_name=model_name).first()
    changeable = set(_deployments(user, CHANGE).filter(model_name=model_name).values_list("pk", flat=True))
    router = _router_health()
    shared = _shared_cooldowns([d.pk for d in deployments])
    ids = [d.pk for d in deployments]
    stats = recent_stats(SpendLog.objects.restrict(user), ids, timezone.now() - timedelta(minutes=RECENT_MINUTES))
    probes = latest_probes(ids)
    group = GroupHealth(
        model_name=model_name,
        strategy=settings_row.get_strategy_display() if settings_row else "Weighted shuffle (default)",
        fallbacks=list(settings_row.fallbacks) if settings_row else [],
        cooldown_known=router is not None or shared is not None,
        cooldown_shared=shared is not None,
    )
    for deployment in deployments:
        entry = stats[deployment.pk]
        latencies = entry.latencies
        last_error = entry.last_error
        group.deployments.append(
            DeploymentHealth(
                deployment=deployment,
                requests=entry.requests,
                errors=entry.errors,
                p50_latency_ms=round(median(latencies), 1) if latencies else None,
                max_latency_ms=round(max(latencies), 1) if latencies else None,
                last_error=last_error[0] if last_error else "",
                last_error_at=last_error[1] if last_error else None,
                cooldown_seconds=_cooldown(router, shared, deployment.pk),
                in_flight=(router or {}).get(deployment.pk, {}).get("in_flight"),
                may_test=deployment.pk in changeable,
                probe=probes.get(deployment.pk),
            )
        )
    return group


def deployment_for_test(user, pk: int):
    deployment = _deployments(user, CHANGE).filter(pk=pk).first()
    if deployment is None:
        raise PermissionDenied("You may not test this deployment.")
    return deployment


def _probe(deployment) -> ConnectionResult:
    """One tiny request through the provider adapter the proxy uses (so the test exercises the real path)."""
    return probe_deployment(deployment)


def deployment_test_connection(*, actor: Actor, deployment) -> ConnectionResult:
    """Call the deployment with a one-token request; record who tested it and what came back (no secrets)."""
    started = time.perf_counter()
    try:
        result = _probe(deployment)
    except Exception as exc:  # a probe must report, never 500: the admin wants to see why
        logger.warning("test connection to deployment %s failed: %s", deployment.pk, type(exc).__name__)
        elapsed = (time.perf_counter() - started) * 1000
        result = ConnectionResult(False, None, elapsed, f"{type(exc).__name__}")
    audit_record(
        actor=actor,
        action="deployment.test_connection",
        obj=deployment,
        organization=deployment.organization,
        changes={"ok": result.ok, "status": result.status, "latency_ms": round(result.latency_ms, 1)},
    )
    return result
