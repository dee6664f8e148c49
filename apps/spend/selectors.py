"""Spend reads: window totals for the limiter, usage for key holders, summaries for APIs and reports.

For the rate-limit engineer: when a Redis budget counter for ``(scope, scope_id, window_id)`` is
missing (evicted, Redis restarted), seed it with ``window_spent(scope, scope_id, window_id)``. It is
the durable total of every ingested request in that window (the Redis counter additionally holds
in-flight reservations and events still in the outbox). Scope ids are as in ``apps.spend.scopes``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, DecimalField, QuerySet, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.keys.models import VirtualKey
from apps.spend.models import BudgetWindow, DailySpend, MonthlySpend
from apps.spend.scopes import window_of

ZERO = Decimal(0)
_PLACES = Decimal(1).scaleb(-DailySpend._meta.get_field("cost").decimal_places)


def money(value) -> Decimal:
    """Totals at the ledger's precision. Postgres sums exactly; SQLite (embedded) sums decimals as
    floats, so its totals carry ~1e-15 noise that this rounds away."""
    return ZERO if value is None else Decimal(value).quantize(_PLACES)


_SUMMARY_FILTERS = (("key", "key_id"), ("team", "team_id"), ("user", "user_id"), ("model", "model"))
_SUMMARY_FILTERS += (("customer", "customer_id"), ("organization", "organization_id"))
GROUPINGS = {
    "team": ("team_id", "team__name"),
    "key": ("key_id", "key__alias"),
    "user": ("user_id", "user__username"),
    "model": ("model", None),
    "day": ("day", None),
    "customer": ("customer_id", None),
    "organization": ("organization_id", "organization__name"),
}


def window_spent(scope: str, scope_id: str, window_id: str) -> Decimal:
    """Durable spend of one scope in one window (0 when nothing was ingested for it yet)."""
    spent = (
        BudgetWindow.objects.filter(scope=scope, scope_id=str(scope_id), window_id=window_id)
        .values_list("spent", flat=True)
        .first()
    )
    return money(spent)


async def awindow_spent(scope: str, scope_id: str, window_id: str) -> Decimal:
    """Async twin of ``window_spent`` for the proxy process (only on a counter miss, never per request)."""
    spent = await (
        BudgetWindow.objects.filter(scope=scope, scope_id=str(scope_id), window_id=window_id)
        .values_list("spent", flat=True)
        .afirst()
    )
    return money(spent)


def key_usage(key_id: int, *, now: datetime | None = None) -> dict[str, Any]:
    """What a key holder may see about their own key: spend, requests, tokens, budget left."""
    key = VirtualKey.objects.select_related("organization").filter(pk=key_id).first()
    if key is None:
        return {}
    now = now or timezone.now()
    totals = MonthlySpend.objects.filter(key_id=key_id).aggregate(
        cost=Coalesce(Sum("cost"), Value(ZERO, output_field=DecimalField())),
        requests=Coalesce(Sum("requests"), 0),
        prompt_tokens=Coalesce(Sum("prompt_tokens"), 0),
        completion_tokens=Coalesce(Sum("completion_tokens"), 0),
    )
    window = window_of(key.budget_duration, now, key.organization.time_zone)
    spent = window_spent("key", str(key.pk), window.id)
    remaining = None if key.max_budget is None else max(ZERO, key.max_budget - spent)
    return {
        "total_spend": money(totals["cost"]),
        "total_requests": totals["requests"],
        "prompt_tokens": totals["prompt_tokens"],
        "completion_tokens": totals["completion_tokens"],
        "budget_duration": key.budget_duration or None,
        "window_id": window.id,
        "window_end": None if window.id == "all" else window.end,
        "window_spend": spent,
        "max_budget": key.max_budget,
        "soft_budget": key.soft_budget,
        "remaining_budget": remaining,
    }


def spend_logs_filter(qs: QuerySet, params: dict[str, str]) -> QuerySet:
    """Apply the read API's filters (values already validated by the caller's serializer)."""
    for name, lookup in (
        ("key", "key_id"),
        ("team", "team_id"),
        ("user", "user_id"),
        ("organization", "organization_id"),
    ):
        if params.get(name) is not None:
            qs = qs.filter(**{lookup: params[name]})
    if params.get("customer"):
        qs = qs.filter(customer_id=params["customer"])
    if params.get("model"):
        qs = qs.filter(model=params["model"])
    if params.get("start"):
        qs = qs.filter(created_at__gte=params["start"])
    if params.get("end"):
        qs = qs.filter(created_at__lt=params["end"])
    return qs


def _first_day(start: datetime | date | None) -> date | None:
    if start is None:
        return None
    return start.astimezone(UTC).date() if isinstance(start, datetime) else start


def _last_day(end: datetime | date | None) -> date | None:
    """The last UTC day a half-open ``end`` reaches (a datetime inside a day still includes that day)."""
    if end is None:
        return None
    if isinstance(end, datetime):
        return (end - timedelta(microseconds=1)).astimezone(UTC).date()
    return end - timedelta(days=1)


def _month_after(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _whole_months(first: date | None, last: date | None) -> tuple[date | None, date | None] | None:
    """The whole UTC months inside the days [first, last], as month starts [since, until) (None: unbounded),
    or None when no month is whole."""
    since = None if first is None or first.day == 1 else _month_after(first)
    since = first if since is None else since
    until = None
    if last is not None:
        after = last + timedelta(days=1)
        until = after if after.day == 1 else last.replace(day=1)
    if since is not None and until is not None and since >= until:
        return None
    return since, until


def _grouped(qs: QuerySet, field: str, label: str | None, group_by: str, params: dict) -> list[dict]:
    for name, lookup in _SUMMARY_FILTERS:
        if params.get(name) not in (None, ""):
            qs = qs.filter(**{lookup: params[name]})
    values = [field] + ([label] if label else [])
    return list(
        qs.values(*values).annotate(
            requests=Sum("requests"),
            errors=Sum("errors"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            cached_tokens=Sum("cached_tokens"),
            cost=Sum("cost"),
        )
    )


_SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "cost")


def spend_summary(
    qs: QuerySet,
    *,
    group_by: str,
    start: datetime | date | None = None,
    end: datetime | date | None = None,
    params: dict | None = None,
    monthly: QuerySet | None = None,
) -> list[dict[str, Any]]:
    """Totals grouped by one dimension, most expensive first (day: chronological); UTC days.

    ``qs`` is the tenant-restricted ``DailySpend``; ``monthly``, the same restriction of ``MonthlySpend``, serves
    the whole months of the range (all of it without bounds), and the daily rows only the cut-short months at
    either end: a year's summary reads a few thousand rows, not millions. Grouping by day reads the daily rows.
    """
    field, label = GROUPINGS[group_by]
    params = params or {}
    first, last = _first_day(start), _last_day(end)
    months = None if monthly is None or group_by == "day" else _whole_months(first, last)
    parts: list[list[dict]] = []
    if months is None:
        daily = qs
        if first is not None:
            daily = daily.filter(day__gte=first)
        if last is not None:
            daily = daily.filter(day__lte=last)
        parts.append(_grouped(daily, field, label, group_by, params))
    else:
        since, until = months
        whole = monthly
        if since is not None:
            whole = whole.filter(month__gte=since)
            if first < since:  # the first month is cut short: its days from the daily rows
                parts.append(_grouped(qs.filter(day__gte=first, day__lt=since), field, label, group_by, params))
        if until is not None:
            whole = whole.filter(month__lt=until)
            if until <= last:  # so is the last one
                parts.append(_grouped(qs.filter(day__gte=until, day__lte=last), field, label, group_by, params))
        parts.append(_grouped(whole, field, label, group_by, params))
    merged: dict[Any, dict] = {}
    for part in parts:
        for row in part:
            into = merged.get(row[field])
            if into is None:
                merged[row[field]] = dict(row)
                continue
            for name in _SUMS:
                into[name] = (into[name] or 0) + (row[name] or 0)
    if group_by == "day":
        ordered = sorted(merged.values(), key=lambda row: row["day"])
    else:
        # As ORDER BY -cost, field did: NULL last among equal costs (one row per value, so two None never meet).
        ordered = sorted(merged.values(), key=lambda row: (-(row["cost"] or 0), row[field] is None, row[field]))
    out = []
    for row in ordered:
        value = row[field]
        out.append(
            {
                "group": group_by,
                "value": value.isoformat() if isinstance(value, date) else value,
                "label": (row.get(label) if label else None) or ("" if value is None else str(value)),
                "requests": row["requests"] or 0,
                "errors": row["errors"] or 0,
                "prompt_tokens": row["prompt_tokens"] or 0,
                "completion_tokens": row["completion_tokens"] or 0,
                "cached_tokens": row["cached_tokens"] or 0,
                "cost": money(row["cost"]),
            }
        )
    return out


def spend_log_totals(qs: QuerySet) -> dict[str, Any]:
    totals = qs.aggregate(requests=Count("id"), cost=Sum("cost"))
    return {"requests": totals["requests"], "cost": money(totals["cost"])}
