"""What the spend ledger says about each deployment's recent requests.

Every finished request names its deployment, so health and alerts see the same truth as the bills.
The gateway's own refusals (``rate_limit:*``) never reached the deployment and do not count; requests
that failed over to another deployment are counted from the router's record (``metadata.attempts``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import QuerySet

LATENCY_SAMPLE = 200
ATTEMPT_ROWS_MAX = 2000


@dataclass
class TrafficStats:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    last_error: tuple[str, datetime] | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def deployment_failed(status: int, error_type: str) -> bool:
    """Whether a ledger row counts against the deployment: the upstream failed, not the client or a limiter."""
    if error_type.startswith("upstream"):
        return error_type != "upstream_bad_request"  # the upstream refusing the client's body is the client's
    return status >= 500


def recent_stats(logs: QuerySet, deployment_ids: list[int], since: datetime) -> dict[int, TrafficStats]:
    """Traffic that reached each deployment since ``since``, from ``logs`` (a SpendLog queryset).

    The caller scopes ``logs``: the health page passes ``SpendLog.objects.restrict(user)`` so a shared
    deployment shows each tenant its own requests; the alert rules pass every row.
    """
    stats = {pk: TrafficStats() for pk in deployment_ids}
    recent = (
        logs.filter(deployment_id__in=deployment_ids, created_at__gte=since)
        .exclude(error_type__startswith="rate_limit")
        .order_by("-created_at")
        .values_list("deployment_id", "status", "latency_ms", "error_type", "created_at")
    )
    sample = recent[: LATENCY_SAMPLE * max(len(deployment_ids), 1)]
    for deployment_id, status, latency_ms, error_type, created_at in sample:
        entry = stats[deployment_id]
        entry.requests += 1
        if deployment_failed(status, error_type or ""):
            entry.errors += 1
            if entry.last_error is None:
                entry.last_error = (f"{status} {error_type or ''}".strip(), created_at)
        if len(entry.latencies) < LATENCY_SAMPLE and latency_ms is not None:
            entry.latencies.append(float(latency_ms))
    _add_failed_over_attempts(logs, stats, since)
    return stats


def _add_failed_over_attempts(logs: QuerySet, stats: dict[int, TrafficStats], since: datetime) -> None:
    """A deployment whose requests all failed over to another one never appears as a row's deployment:
    count its attempts from the rows' ``metadata.attempts`` (the router's record), all but the last."""
    rows = (
        logs.filter(created_at__gte=since, metadata__has_key="attempts")
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
            entry.requests += 1
            if deployment_failed(status, error):
                entry.errors += 1
                if entry.last_error is None or entry.last_error[1] < created_at:
                    entry.last_error = (f"{status} {error}".strip(), created_at)
