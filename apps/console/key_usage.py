"""The usage panel on a key's admin page: what it spent, what is left, and which limit binds.

Spend and the budget left come from the spend ledger's selectors (the same window totals the budget
limiter is seeded from); the limits are the key's own and its ancestors', since the tightest wins.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Sum
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.safestring import SafeString

from apps.console.charts import Point, bar_chart, format_money
from apps.spend.models import DailySpend
from apps.spend.selectors import key_usage

CHART_DAYS = 14
CHAIN_FIELDS = ("rpm_limit", "tpm_limit", "max_parallel_requests", "max_budget", "soft_budget", "budget_duration")


def _limit_chain(key) -> list[dict]:
    """One row per limit: the value at each level and the effective (tightest) one."""
    levels = [("key", key), ("user", key.user), ("team", key.team), ("organization", key.organization)]
    rows = []
    for name in CHAIN_FIELDS:
        values = {level: getattr(obj, name, None) if obj is not None else None for level, obj in levels}
        numbers = [v for v in values.values() if v not in (None, "")]
        effective = min(numbers) if numbers and name != "budget_duration" else (values["key"] or None)
        rows.append({"name": name, "values": [values[level] for level, _ in levels], "effective": effective})
    return rows


def _chart(key) -> SafeString:
    today = timezone.now().date()
    first = today - timedelta(days=CHART_DAYS - 1)
    rows = DailySpend.objects.filter(key_id=key.pk, day__gte=first).values("day").annotate(c=Sum("cost"))
    by_day = {row["day"]: row["c"] for row in rows}
    points = []
    for offset in range(CHART_DAYS):
        day = first + timedelta(days=offset)
        value = by_day.get(day) or 0
        points.append(Point(day.strftime("%d %b"), value, f"{day:%a %d %b}: {format_money(value)}"))
    return bar_chart(points, title="This key's spend per day", height=160, label_every=2, css_class="gw-chart days")


def key_usage_panel(key) -> SafeString:
    if key is None or key.pk is None:
        return SafeString("")
    usage = key_usage(key.pk)
    context = {
        "usage": usage,
        "limits": _limit_chain(key),
        "levels": ["key", "user", "team", "organization"],
        "chart": _chart(key),
    }
    return SafeString(render_to_string("admin/gateway/key_usage.html", context))
