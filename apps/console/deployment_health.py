"""Deployment health for the admin: per model group, each deployment's state, recent errors and latency.

Recent traffic comes from the spend ledger (every finished request names its deployment), so the
page shows the same truth as the bills. Cooldown and in-flight requests are the router's live state
in the worker serving the page (``apps.proxy.app.router_health``); with Redis, cooldowns are shared
by all workers (``apps.proxy.cooldown_sync``), so the page also reads the stored ones and shows the
longer of the two. Where neither is known the page says so rather than guessing.
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

from apps.console.connection_probe import ConnectionResult, probe_deployment
from apps.proxy.cooldown_sync import shared_cooldowns_left
from apps.proxy.models import ModelDeployment, ModelGroup
from apps.spend.models import SpendLog
from apps.teams.audit import Actor, audit_record
from apps.teams.scoping import CHANGE, VIEW

logger = logging.getLogger(__name__)

RECENT_MINUTES = 15
LATENCY_SAMPLE = 200
DEGRADED_ERROR_RATE = 0.2
DEGRADED_MIN_REQUESTS = 5
ATTEMPT_ROWS_MAX = 2000


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

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def state(self) -> str:
        if not self.deployment.enabled:
            return "disabled"
        if self.cooldown_seconds:
            return "cooldown"
        if self.requests >= DEGRADED_MIN_REQUESTS and self.error_rate >= DEGRADED_ERROR_RATE:
            return "degraded"
        return "ok" if self.requests else "idle"


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


def deployment_failed(status: int, error_type: str) -> bool:
    """Whether a ledger row counts against the deployment: the upstream failed, not the client or a limiter."""
    if error_type.startswith("upstream"):
        return error_type != "upstream_bad_request"  # the upstream refusing the client's body is the client's
    return status >= 500


def _recent_stats(user, deployment_ids: list[int]) -> dict[int, dict]:
    """Traffic that reached each deployment: the gateway's own refusals (rate_limit:*) never did.

    Only the traffic ``user`` may see counts: a shared deployment shows each tenant its own requests.
    """
    since = timezone.now() - timedelta(minutes=RECENT_MINUTES)
    stats: dict[int, dict] = {
        pk: {"requests": 0, "errors": 0, "latencies": [], "last_error": None} for pk in deployment_ids
    }
    recent = (
        SpendLog.objects.restrict(user)
        .filter(deployment_id__in=deployment_ids, created_at__gte=since)
        .exclude(error_type__startswith="rate_limit")
        .order_by("-created_at")
        .values_list("deployment_id", "status", "latency_ms", "error_type", "created_at")
    )
    sample = recent[: LATENCY_SAMPLE * max(len(deployment_ids), 1)]
    for deployment_id, status, latency_ms, error_type, created_at in sample:
        entry = stats[deployment_id]
        entry["requests"] += 1
        if deployment_failed(status, error_type or ""):
            entry["errors"] += 1
            if entry["last_error"] is None:
                entry["last_error"] = (f"{status} {error_type or ''}".strip(), created_at)
        if len(entry["latencies"]) < LATENCY_SAMPLE and latency_ms is not None:
            entry["latencies"].append(float(latency_ms))
    _add_failed_over_attempts(user, stats, since)
    return stats


def _add_failed_over_attempts(user, stats: dict[int, dict], since) -> None:
    """A deployment whose requests all failed over to another one never appears as a row's deployment:
    count its attempts from the rows' ``metadata.attempts`` (the router's record), all but the last."""
    rows = (
        SpendLog.objects.restrict(user)
        .filter(created_at__gte=since, metadata__has_key="attempts")
        .order_by("-created_at")
        .values_list("metadata", "created_at")[:ATTEMPT_ROWS_MAX]
    )
    for metadata, created_at in rows:
        attempts = metadata.get("attempts") if isinstance(metadata, dict) else None
        if not isinstance(attempts, list):
            continue
        for attempt in attempts[:-1]:
            entry = stats.get(attempt.get("deployment_id")) if isinstance(attempt, dict) else None
            if entry is None:
                continue
            status, error = int(attempt.get("status") or 0), str(attempt.get("error") or "")
            entry["requests"] += 1
            if deployment_failed(status, error):
                entry["errors"] += 1
                if entry["last_error"] is None or entry["last_error"][1] < created_at:
                    entry["last_error"] = (f"{status} {error}".strip(), created_at)


def group_health(user, model_name: str) -> GroupHealth | None:
    deployments = list(_deployments(user).filter(model_name=model_name).order_by("priority", "pk"))
    if not deployments:
        return None
    settings_row = ModelGroup.objects.filter(model_name=model_name).first()
    changeable = set(_deployments(user, CHANGE).filter(model_name=model_name).values_list("pk", flat=True))
    router = _router_health()
    shared = _shared_cooldowns([d.pk for d in deployments])
    stats = _recent_stats(user, [d.pk for d in deployments])
    group = GroupHealth(
        model_name=model_name,
        strategy=settings_row.get_strategy_display() if settings_row else "Weighted shuffle (default)",
        fallbacks=list(settings_row.fallbacks) if settings_row else [],
        cooldown_known=router is not None or shared is not None,
        cooldown_shared=shared is not None,
    )
    for deployment in deployments:
        entry = stats[deployment.pk]
        latencies = entry["latencies"]
        last_error = entry["last_error"]
        group.deployments.append(
            DeploymentHealth(
                deployment=deployment,
                requests=entry["requests"],
                errors=entry["errors"],
                p50_latency_ms=round(median(latencies), 1) if latencies else None,
                max_latency_ms=round(max(latencies), 1) if latencies else None,
                last_error=last_error[0] if last_error else "",
                last_error_at=last_error[1] if last_error else None,
                cooldown_seconds=_cooldown(router, shared, deployment.pk),
                in_flight=(router or {}).get(deployment.pk, {}).get("in_flight"),
                may_test=deployment.pk in changeable,
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
