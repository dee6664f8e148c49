"""Alert rules: reads over the ledger, its daily aggregates, the probes and shared cooldowns.

Each rule returns ``Finding``s; services.alerts_evaluate turns a finding into at most one sent alert per
(rule, subject, window). The trailing-window rules (deployments, limits) look at the last
ALERT_WINDOW_MINUTES and name the window by its clock-aligned start, so a problem that lasts is
re-announced once per window, not once per evaluation. Thresholds are settings (base.py).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Sum

from apps.monitoring.models import AlertEvent, AlertRule
from apps.monitoring.selectors import latest_probes
from apps.monitoring.traffic import recent_stats
from apps.proxy.cooldown_sync import shared_cooldowns_left
from apps.proxy.models import ModelDeployment
from apps.spend.budgets import budgets_for
from apps.spend.models import BudgetAlert, DailySpend, SpendLog
from apps.teams.models import Organization, Team

logger = logging.getLogger(__name__)

BUDGET_LOOKBACK = timedelta(days=1)  # budget alerts created since then are forwarded to channels
ANOMALY_DAYS = 7


@dataclass(frozen=True)
class Finding:
    rule: str
    subject: str
    window_id: str
    organization_id: int | None
    team_id: int | None
    title: str
    text: str
    facts: dict = field(default_factory=dict)


def trailing_window_id(now: datetime, minutes: int) -> str:
    """The clock-aligned window ``now`` falls in, e.g. ``2026-12-05T07:15Z/15m``."""
    epoch_minute = int(now.timestamp() // 60)
    start = datetime.fromtimestamp((epoch_minute - epoch_minute % minutes) * 60, UTC)
    return f"{start:%Y-%m-%dT%H:%M}Z/{minutes}m"


def _cooldowns(deployment_ids: list[int]) -> dict[int, float]:
    """Shared cooldowns (Redis); none known without Redis or when it does not answer (the other reasons stand)."""
    if not settings.REDIS_URL:
        return {}
    try:
        return shared_cooldowns_left(settings.REDIS_URL, deployment_ids)
    except Exception as exc:  # Redis down: the traffic and probe reasons still alert
        logger.warning("alerts: reading shared cooldowns failed (%s)", type(exc).__name__)
        return {}


def deployments_unhealthy(*, now: datetime) -> list[Finding]:
    """Enabled deployments whose traffic fails over the threshold, whose probe failed, or that cool down."""
    minutes = settings.ALERT_WINDOW_MINUTES
    deployments = list(ModelDeployment.objects.filter(enabled=True).order_by("pk"))
    ids = [d.pk for d in deployments]
    traffic = recent_stats(SpendLog.objects.all(), ids, now - timedelta(minutes=minutes))
    probes = latest_probes(ids, now=now)
    cooling = _cooldowns(ids)
    window = trailing_window_id(now, minutes)
    findings = []
    for deployment in deployments:
        stats, probe, cooldown = traffic[deployment.pk], probes.get(deployment.pk), cooling.get(deployment.pk)
        reasons = []
        if stats.requests >= settings.ALERT_DEPLOYMENT_MIN_REQUESTS and (
            stats.error_rate >= settings.ALERT_DEPLOYMENT_ERROR_RATE
        ):
            reasons.append(f"{stats.errors} of {stats.requests} requests failed in the last {minutes} minutes")
        if probe is not None and not probe.ok:
            status = f"HTTP {probe.status}" if probe.status else "no answer"
            reasons.append(f"its probe failed ({status}, {probe.consecutive_failures} in a row): {probe.detail}")
        if cooldown:
            reasons.append(f"it is cooling down ({cooldown:.0f} s left)")
        if not reasons:
            continue
        label = deployment.name or f"#{deployment.pk}"
        findings.append(
            Finding(
                rule=AlertRule.DEPLOYMENT_UNHEALTHY,
                subject=f"deployment:{deployment.pk}",
                window_id=window,
                organization_id=deployment.organization_id,
                team_id=None,
                title=f"Deployment {label} of {deployment.model_name} is unhealthy",
                text="; ".join(reasons) + ".",
                facts={
                    "deployment_id": deployment.pk,
                    "model_name": deployment.model_name,
                    "provider": deployment.provider,
                    "requests": stats.requests,
                    "errors": stats.errors,
                    "error_rate": round(stats.error_rate, 3),
                    "last_error": stats.last_error[0] if stats.last_error else "",
                    "probe": "none" if probe is None else ("ok" if probe.ok else f"failed: {probe.status or '-'}"),
                    "cooldown_seconds": cooldown or 0,
                },
            )
        )
    return findings


def limits_repeated(*, now: datetime) -> list[Finding]:
    """Keys and teams refused by a limit (any 429 the gateway itself answered) ALERT_LIMIT_REFUSALS times
    or more in the window; the facts break the refusals down by limit type."""
    minutes, threshold = settings.ALERT_WINDOW_MINUTES, settings.ALERT_LIMIT_REFUSALS
    rows = (
        SpendLog.objects.filter(created_at__gte=now - timedelta(minutes=minutes), error_type__startswith="rate_limit:")
        .values_list("organization_id", "team_id", "key_id", "key_alias", "error_type")
        .annotate(n=Count("id"))
    )
    keys: dict[int, dict] = defaultdict(lambda: {"by_type": defaultdict(int)})
    teams: dict[int, dict] = defaultdict(lambda: {"by_type": defaultdict(int)})
    for organization_id, team_id, key_id, alias, error_type, n in rows:
        limit_type = error_type.split(":", 1)[1]
        for bucket, pk in ((keys, key_id), (teams, team_id)):
            if pk is None:
                continue
            entry = bucket[pk]
            entry.update(organization_id=organization_id, team_id=team_id, alias=alias)
            entry["by_type"][limit_type] += n
    team_names = dict(Team.objects.filter(pk__in=list(teams)).values_list("pk", "name"))
    window = trailing_window_id(now, minutes)
    findings = []
    for scope, bucket in (("key", keys), ("team", teams)):
        for pk, entry in bucket.items():
            total = sum(entry["by_type"].values())
            if total < threshold:
                continue
            name = (entry["alias"] or f"#{pk}") if scope == "key" else team_names.get(pk, f"#{pk}")
            kinds = ", ".join(f"{n} {t}" for t, n in sorted(entry["by_type"].items()))
            findings.append(
                Finding(
                    rule=AlertRule.LIMITS_REPEATED,
                    subject=f"{scope}:{pk}",
                    window_id=window,
                    organization_id=entry["organization_id"],
                    team_id=entry["team_id"],
                    title=f"{scope.capitalize()} {name} was refused by its limits {total} times",
                    text=f"{total} requests of {scope} {name} were refused in the last {minutes} minutes ({kinds}).",
                    facts={"scope": scope, f"{scope}_id": pk, "refusals": total, **dict(entry["by_type"])},
                )
            )
    return findings


def spend_anomalies(*, now: datetime) -> list[Finding]:
    """Organizations and teams whose spend today (UTC) exceeds ALERT_SPEND_ANOMALY_FACTOR times their
    average day of the previous 7 (days without spend count as 0) and at least ALERT_SPEND_ANOMALY_MIN_USD."""
    today = now.astimezone(UTC).date()
    rows = (
        DailySpend.objects.filter(day__gte=today - timedelta(days=ANOMALY_DAYS), day__lte=today)
        .values_list("organization_id", "team_id", "day")
        .annotate(cost=Sum("cost"))
    )
    spent: dict[tuple[str, int], dict] = defaultdict(lambda: {"today": Decimal(0), "before": Decimal(0)})
    for organization_id, team_id, day, cost in rows:
        for scope, pk in (("organization", organization_id), ("team", team_id)):
            if pk is None:
                continue
            entry = spent[(scope, pk)]
            entry["organization_id"] = organization_id
            entry["team_id"] = team_id if scope == "team" else None
            entry["today" if day == today else "before"] += cost or 0
    factor = Decimal(str(settings.ALERT_SPEND_ANOMALY_FACTOR))
    floor = Decimal(str(settings.ALERT_SPEND_ANOMALY_MIN_USD))
    names = {
        "organization": dict(Organization.objects.filter(pk__in=[k[1] for k in spent if k[0] == "organization"])
                             .values_list("pk", "name")),
        "team": dict(Team.objects.filter(pk__in=[k[1] for k in spent if k[0] == "team"]).values_list("pk", "name")),
    }  # fmt: skip
    findings = []
    for (scope, pk), entry in spent.items():
        average = entry["before"] / ANOMALY_DAYS
        if entry["today"] < floor or entry["today"] <= factor * average:
            continue
        name = names[scope].get(pk, f"#{pk}")
        times = f"{entry['today'] / average:.1f} times" if average else "with no spend in"
        findings.append(
            Finding(
                rule=AlertRule.SPEND_ANOMALY,
                subject=f"{scope}:{pk}",
                window_id=today.isoformat(),
                organization_id=entry["organization_id"],
                team_id=entry["team_id"],
                title=f"{scope.capitalize()} {name} spent ${entry['today']:.2f} today, {times} its 7-day average",
                text=(
                    f"{scope.capitalize()} {name} has spent {entry['today']:.4f} USD today (UTC); its average day over "
                    f"the previous {ANOMALY_DAYS} days was {average:.4f} USD (alert above {factor} times that)."
                ),
                facts={
                    "scope": scope,
                    f"{scope}_id": pk,
                    "today_usd": str(entry["today"].quantize(Decimal("0.000001"))),
                    "average_usd": str(average.quantize(Decimal("0.000001"))),
                    "factor": str(factor),
                },
            )
        )
    return findings


def budget_alerts_recent(*, now: datetime) -> list[Finding]:
    """Budget alerts apps/spend recorded (and mailed to the tenant's admins), for the channels too.

    Spend sits below this app and cannot know its channels; its ``BudgetAlert`` row (UNIQUE per window)
    is the fact, forwarded once because the finding keeps its scope and window id.
    """
    alerts = list(BudgetAlert.objects.filter(created_at__gte=now - BUDGET_LOOKBACK).order_by("created_at"))
    if not alerts:
        return []
    forwarded = set(
        AlertEvent.objects.filter(
            rule__in=(AlertRule.BUDGET_SOFT, AlertRule.BUDGET_HARD), created_at__gte=now - 2 * BUDGET_LOOKBACK
        ).values_list("rule", "subject", "window_id")
    )
    alerts = [a for a in alerts if (f"budget.{a.kind}", f"{a.scope}:{a.scope_id}", a.window_id) not in forwarded]
    budgets = budgets_for({(a.scope, a.scope_id) for a in alerts})
    findings = []
    for alert in alerts:
        rule, subject = f"budget.{alert.kind}", f"{alert.scope}:{alert.scope_id}"
        budget = budgets.get((alert.scope, alert.scope_id))
        label = budget.label if budget else f"{alert.scope.capitalize()} {alert.scope_id}"
        what = "soft budget" if alert.kind == BudgetAlert.Kind.SOFT else "budget"
        findings.append(
            Finding(
                rule=rule,
                subject=subject,
                window_id=alert.window_id,
                organization_id=alert.organization_id,
                team_id=alert.team_id,
                title=f"{label} reached its {what}",
                text=f"Spent {alert.spent:.6f} USD of {alert.threshold:.6f} USD in window {alert.window_id}.",
                facts={
                    "scope": alert.scope,
                    "scope_id": alert.scope_id,
                    "spent": str(alert.spent),
                    "threshold": str(alert.threshold),
                },
            )
        )
    return findings


RULES = (deployments_unhealthy, limits_repeated, spend_anomalies, budget_alerts_recent)
