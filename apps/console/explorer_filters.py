"""The request explorer's filters: key, team, model, deployment, status, limit type and time range.

Each filter offers only what the viewer may see (its choices come through ``restrict()``), and each
one narrows the ledger along an index (``SpendLog.Meta.indexes``): by key, team, model or deployment
and time; errors and refusals through their partial indexes. A value that is no choice, id or date is
a 400 (``BadFilterValue``, a ``SuspiciousOperation`` like the strict site's unoffered filters), never
a 500; filtering by an id never shows more than the viewer's own rows, since the changelist's
queryset is restricted before any filter runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib import admin
from django.contrib.admin.exceptions import DisallowedModelAdminLookup
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.keys.models import VirtualKey
from apps.proxy.models import ModelDeployment
from apps.spend.models import MonthlySpend
from apps.teams.models import Team
from apps.teams.scoping import VIEW

# More choices than this do not help in a sidebar; the rows link to their key's filter instead.
MAX_CHOICES = 100
# The limit types a gateway 429 names (docs/ratelimit.md; the body's "limit_type").
LIMIT_TYPES = ("requests", "tokens", "concurrent_requests", "budget", "max_iterations")
# How far back the model filter looks for the model names a tenant's requests used.
MODEL_LOOKBACK = timedelta(days=31)
PERIODS = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7), "30d": timedelta(days=30)}
PERIOD_LABELS = {"1h": "Last hour", "24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days"}
INPUT_FORMAT = "%Y-%m-%dT%H:%M"  # what <input type="datetime-local"> sends


class BadFilterValue(DisallowedModelAdminLookup):
    """A filter value that is no choice, no id or no date: Django answers 400 (SuspiciousOperation)."""


def _int_value(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise BadFilterValue(f"Not an id: {value[:40]!r}.") from None
    if not 0 < number < 2**63:
        raise BadFilterValue("No such id.")
    return number


class IdChoiceFilter(admin.SimpleListFilter):
    """A foreign key filter whose choices are the viewer's own objects (not every row of the table)."""

    field = ""

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        return queryset.filter(**{f"{self.field}_id": _int_value(self.value())})


class KeyFilter(IdChoiceFilter):
    title = "key"
    parameter_name = field = "key"

    def lookups(self, request, model_admin):
        keys = VirtualKey.objects.restrict(request.user, VIEW).order_by("alias", "pk")[:MAX_CHOICES]
        return [(str(pk), alias or f"key {pk}") for pk, alias in keys.values_list("pk", "alias")]


class TeamFilter(IdChoiceFilter):
    title = "team"
    parameter_name = field = "team"

    def lookups(self, request, model_admin):
        teams = Team.objects.restrict(request.user, VIEW).select_related("organization")
        return [(str(team.pk), str(team)) for team in teams.order_by("organization__name", "name")[:MAX_CHOICES]]


class DeploymentFilter(IdChoiceFilter):
    """Deployments the viewer may see as rows (tenant admins); members filter by model instead."""

    title = "deployment"
    parameter_name = field = "deployment"

    def lookups(self, request, model_admin):
        deployments = ModelDeployment.objects.restrict(request.user, VIEW).order_by("model_name", "pk")
        return [(str(d.pk), str(d)) for d in deployments[:MAX_CHOICES]]


class ModelFilter(admin.SimpleListFilter):
    """The model names the viewer's requests used lately (from the per-month totals, not the ledger)."""

    title = "model"
    parameter_name = "model"

    def lookups(self, request, model_admin):
        since = (timezone.now().date() - MODEL_LOOKBACK).replace(day=1)
        names = (
            MonthlySpend.objects.restrict(request.user, VIEW)
            .filter(month__gte=since)
            .exclude(model="")
            .order_by("model")
            .values_list("model", flat=True)
            .distinct()[:MAX_CHOICES]
        )
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        # Any name is a fair question (an older model than the lookback): it only narrows the viewer's rows.
        return queryset if self.value() is None else queryset.filter(model=self.value()[:200])


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"
    RANGES = {
        "ok": ("Succeeded (2xx)", {"status__lt": 400}),
        "client_error": ("Refused (4xx, not 429)", {"status__gte": 400, "status__lt": 500}),
        "429": ("Rate limited (429)", {"status": 429}),
        "server_error": ("Failed (5xx)", {"status__gte": 500}),
    }

    def lookups(self, request, model_admin):
        return [(value, label) for value, (label, _lookup) in self.RANGES.items()]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        if self.value() not in self.RANGES:
            raise BadFilterValue("Unknown status filter.")
        queryset = queryset.filter(**self.RANGES[self.value()][1])
        return queryset.exclude(status=429) if self.value() == "client_error" else queryset


class LimitTypeFilter(admin.SimpleListFilter):
    title = "limit type"
    parameter_name = "limit_type"

    def lookups(self, request, model_admin):
        return [(name, name.replace("_", " ")) for name in LIMIT_TYPES]

    def queryset(self, request, queryset):
        if self.value() is None:
            return queryset
        if self.value() not in LIMIT_TYPES:
            raise BadFilterValue("Unknown limit type.")
        return queryset.filter(limit_type=self.value())


class TimeRangeFilter(admin.ListFilter):
    """A preset period (last hour ... last 30 days) or a from/to pair typed in the sidebar's form.

    Replaces the admin's date hierarchy, whose year/month links need a DISTINCT over the whole ledger.
    Times typed without a zone are the site's time zone (``TIME_ZONE``).
    """

    title = "time"
    template = "admin/spend/spendlog/time_filter.html"
    parameters = ("period", "since", "until")

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        for name in self.parameters:
            if name in params:
                self.used_parameters[name] = params.pop(name)[-1]
        self.hidden: list[tuple[str, str]] = []

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str]:
        return list(self.parameters)

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        period = self.used_parameters.get("period")
        if period:
            if period not in PERIODS:
                raise BadFilterValue("Unknown period.")
            return timezone.now() - PERIODS[period], None
        return self._moment("since"), self._moment("until")

    def _moment(self, name: str) -> datetime | None:
        text = self.used_parameters.get(name, "").strip()
        if not text:
            return None
        try:
            moment = parse_datetime(text)
        except ValueError:
            moment = None
        if moment is None:
            raise BadFilterValue(f"'{name}' is not a date and time.")
        return timezone.make_aware(moment) if timezone.is_naive(moment) else moment

    def queryset(self, request, queryset):
        since, until = self.bounds()
        if since is not None:
            queryset = queryset.filter(created_at__gte=since)
        if until is not None:
            queryset = queryset.filter(created_at__lt=until)
        return queryset

    def choices(self, changelist):
        # The form keeps every other filter the list has (its inputs are the rest of the query string).
        self.hidden = [(k, v) for k, v in changelist.params.items() if k not in self.parameters]
        current = self.used_parameters.get("period")
        plain = not any(self.used_parameters.values())
        everything = changelist.get_query_string(remove=self.parameters)
        yield {"selected": plain, "query_string": everything, "display": "Any time"}
        for value, label in PERIOD_LABELS.items():
            yield {
                "selected": current == value,
                "query_string": changelist.get_query_string({"period": value}, remove=["since", "until"]),
                "display": label,
            }

    def typed(self, name: str) -> str:
        """The value to show back in the form's input (as typed, when it parsed)."""
        try:
            moment = self._moment(name)
        except BadFilterValue:
            return ""
        return timezone.localtime(moment).strftime(INPUT_FORMAT) if moment else ""

    def since_value(self) -> str:
        return self.typed("since")

    def until_value(self) -> str:
        return self.typed("until")
