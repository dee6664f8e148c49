"""The admin index dashboard: spend against budgets, traffic, top keys/teams/models, scoped to the viewer.

Reads only. Ledger rows come through ``SpendLog.objects.restrict(user)`` (the tenant choke point), so
a team admin's numbers are their team's and an outsider's are their own. Budget bars use the same
window ids as the limiters (apps/spend/windows.py), so "this window" here is the window being enforced.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncHour
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from apps.console.charts import Point, bar_chart, format_money
from apps.keys.models import VirtualKey
from apps.spend.models import DailySpend, MonthlySpend, SpendLog
from apps.spend.scopes import window_of
from apps.spend.selectors import window_spent
from apps.spend.windows import Window
from apps.teams.models import Organization, Team
from apps.teams.scoping import tenancy_for

ZERO = Decimal(0)
TOP_N = 5
MAX_BUDGET_BARS = 12
CHART_DAYS = 14


@dataclass(frozen=True)
class BudgetBar:
    kind: str  # organization | team | key | user
    label: str
    url: str
    window: Window
    spent: Decimal
    soft: Decimal | None
    hard: Decimal | None

    @property
    def state(self) -> str:
        """ "hard" (red) at or over the hard budget, "soft" (amber) at or over the soft one, else "ok"."""
        if self.hard is not None and self.spent >= self.hard:
            return "hard"
        if self.soft is not None and self.spent >= self.soft:
            return "soft"
        return "ok"

    @property
    def ceiling(self) -> Decimal:
        return self.hard or self.soft or ZERO

    @property
    def percent(self) -> int:
        if not self.ceiling:
            return 0
        return min(100, int(self.spent * 100 / self.ceiling))

    @property
    def soft_percent(self) -> int | None:
        if self.soft is None or not self.ceiling:
            return None
        return min(100, int(self.soft * 100 / self.ceiling))

    @property
    def window_label(self) -> str:
        return "lifetime" if self.window.id == "all" else self.window.id


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    rate_limited: int = 0
    cost: Decimal = ZERO
    tokens: int = 0

    @property
    def error_rate(self) -> float:
        return 100.0 * self.errors / self.requests if self.requests else 0.0


@dataclass
class Dashboard:
    today: Totals
    month: Totals
    last_hour: Totals
    limited_by_type: list[tuple[str, int]]
    top_keys: list[dict]
    top_teams: list[dict]
    top_models: list[dict]
    budget_bars: list[BudgetBar]
    chart_days: SafeString
    chart_hours: SafeString
    scope_label: str


def _spend_logs(user):
    return SpendLog.objects.restrict(user)


def _daily(user):
    """Per-day totals: months of history without scanning the ledger."""
    return DailySpend.objects.restrict(user)


def _daily_totals(qs) -> Totals:
    row = qs.aggregate(
        requests=Sum("requests"),
        errors=Sum("errors"),
        cost=Sum("cost"),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
    )
    return Totals(
        requests=row["requests"] or 0,
        errors=row["errors"] or 0,
        cost=row["cost"] or ZERO,
        tokens=(row["prompt"] or 0) + (row["completion"] or 0),
    )


def _totals(qs) -> Totals:
    row = qs.aggregate(
        requests=Count("pk"),
        errors=Count("pk", filter=Q(status__gte=400)),
        rate_limited=Count("pk", filter=Q(status=429)),
        cost=Sum("cost"),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
    )
    return Totals(
        requests=row["requests"] or 0,
        errors=row["errors"] or 0,
        rate_limited=row["rate_limited"] or 0,
        cost=row["cost"] or ZERO,
        tokens=(row["prompt"] or 0) + (row["completion"] or 0),
    )


def _top(daily, group: tuple[str, ...]) -> list[dict]:
    return list(daily.values(*group).annotate(cost=Sum("cost"), n=Sum("requests")).order_by("-cost", "-n")[:TOP_N])


def _admin_url(name: str, *args) -> str:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return ""


def _bar(kind: str, obj, label: str, url: str, now: datetime, time_zone: str) -> BudgetBar:
    """The scope's spend in the window being enforced now: the same (scope, id, window id) as the limiters."""
    window = window_of(obj.budget_duration, now, time_zone)
    spent = window_spent(kind, str(obj.pk), window.id)
    return BudgetBar(kind, label, url, window, spent, obj.soft_budget, obj.max_budget)


def budget_bars(user, now: datetime) -> list[BudgetBar]:
    """Every organization, team and key the user sees that has a budget, fullest first."""
    budgeted = Q(max_budget__isnull=False) | Q(soft_budget__isnull=False)
    bars: list[BudgetBar] = []
    for org in Organization.objects.restrict(user).filter(budgeted)[:MAX_BUDGET_BARS]:
        url = _admin_url("admin:teams_organization_change", org.pk)
        bars.append(_bar("organization", org, org.name, url, now, org.time_zone))
    teams = Team.objects.restrict(user).filter(budgeted).select_related("organization")
    for team in teams[:MAX_BUDGET_BARS]:
        url = _admin_url("admin:teams_team_change", team.pk)
        bars.append(_bar("team", team, str(team), url, now, team.organization.time_zone))
    keys = (
        VirtualKey.objects.restrict(user)
        .filter(budgeted, revoked_at__isnull=True)
        .select_related("organization")
        .order_by("-last_used_at", "-created_at")
    )
    for key in keys[:MAX_BUDGET_BARS]:
        url = _admin_url("admin:keys_virtualkey_change", key.pk)
        bars.append(_bar("key", key, str(key), url, now, key.organization.time_zone))
    bars.sort(key=lambda bar: (-bar.percent, bar.kind, bar.label))
    return bars[:MAX_BUDGET_BARS]


def _day_chart(daily, now: datetime) -> SafeString:
    first = (now - timedelta(days=CHART_DAYS - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = daily.filter(day__gte=first.date()).values("day").annotate(c=Sum("cost"))
    by_day = {row["day"]: row["c"] or ZERO for row in rows}
    points = []
    for offset in range(CHART_DAYS):
        day = (first + timedelta(days=offset)).date()
        value = by_day.get(day, ZERO)
        points.append(Point(day.strftime("%d %b"), value, f"{day:%a %d %b}: {format_money(value)}"))
    return bar_chart(points, title=f"Spend per day, last {CHART_DAYS} days", label_every=2, css_class="gw-chart days")


def _hour_chart(logs, now: datetime) -> SafeString:
    first = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    rows = (
        logs.filter(created_at__gte=first).annotate(hour=TruncHour("created_at")).values("hour").annotate(n=Count("pk"))
    )
    by_hour = {row["hour"]: row["n"] for row in rows}
    points = []
    for offset in range(24):
        hour = first + timedelta(hours=offset)
        points.append(
            Point(hour.strftime("%H"), by_hour.get(hour, 0), f"{hour:%H}:00 UTC: {by_hour.get(hour, 0)} requests")
        )
    return bar_chart(
        points, title="Requests per hour, last 24 hours", money=False, label_every=3, css_class="gw-chart hours"
    )


def scope_label(user) -> str:
    tenancy = tenancy_for(user)
    if tenancy.is_superuser:
        return "all organizations"
    names = [org.name for org in Organization.objects.filter(pk__in=tenancy.org_view)]
    names += [str(team) for team in Team.objects.filter(pk__in=tenancy.team_admin).select_related("organization")]
    if not names and tenancy.team_view:
        names = ["your own keys"]
    return ", ".join(names) or "nothing yet"


def dashboard_for(user, now: datetime | None = None) -> Dashboard:
    """Everything the index page shows, for this user only."""
    now = now or timezone.now()
    logs = _spend_logs(user)
    daily = _daily(user)
    today_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = today_start.replace(day=1)
    # This month's totals and top lists from the per-month aggregates (one row per dimension set, not one per
    # day: ~30 times fewer rows by the month's end); today's from the per-day ones. The ledger itself is read
    # only for the last hour, the last 24 hours' chart and today's 429 breakdown, along its time index.
    month = MonthlySpend.objects.restrict(user).filter(month=month_start.date())
    today = _daily_totals(daily.filter(day=today_start.date()))
    limited = (
        logs.filter(created_at__gte=today_start, status=429)
        .values("limit_type")
        .annotate(n=Count("pk"))
        .order_by("-n")
        .values_list("limit_type", "n")
    )
    limited = [(limit_type or "upstream", n) for limit_type, n in limited]
    today.rate_limited = sum(n for _, n in limited)
    return Dashboard(
        today=today,
        month=_daily_totals(month),
        last_hour=_totals(logs.filter(created_at__gte=now - timedelta(hours=1))),
        limited_by_type=limited,
        top_keys=_top(month, ("key_id", "key__alias", "key__prefix")),
        top_teams=_top(month, ("team_id", "team__name", "team__organization__name")),
        top_models=_top(month, ("model",)),
        budget_bars=budget_bars(user, now),
        chart_days=_day_chart(daily, now),
        chart_hours=_hour_chart(logs, now),
        scope_label=scope_label(user),
    )
