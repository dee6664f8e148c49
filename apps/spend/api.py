"""Spend read API: ``/api/v1/spend/logs/`` (cursor-paginated ledger) and ``/api/v1/spend/summary/``.

Thin: validate the query string, restrict to the caller's tenants, call a selector, serialize.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, viewsets
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from apps.spend.models import DailySpend, MonthlySpend, SpendLog
from apps.spend.selectors import GROUPINGS, spend_logs_filter, spend_summary


class SpendLogSerializer(serializers.ModelSerializer):
    key = serializers.IntegerField(source="key_id", allow_null=True)
    team = serializers.IntegerField(source="team_id", allow_null=True)
    organization = serializers.IntegerField(source="organization_id", allow_null=True)
    user = serializers.IntegerField(source="user_id", allow_null=True)
    deployment = serializers.IntegerField(source="deployment_id", allow_null=True)
    cost = serializers.DecimalField(max_digits=24, decimal_places=10, coerce_to_string=True)
    cost_saved = serializers.DecimalField(max_digits=24, decimal_places=10, coerce_to_string=True)
    total_tokens = serializers.IntegerField()
    customer = serializers.CharField(source="customer_id")

    class Meta:
        model = SpendLog
        fields = [
            "request_id",
            "created_at",
            "route",
            "status",
            "model",
            "llm_provider",
            "deployment",
            "organization",
            "team",
            "key",
            "key_alias",
            "user",
            "customer",
            "session_id",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "total_tokens",
            "cost",
            "latency_ms",
            "ttft_ms",
            "overhead_ms",
            "upstream_ttfb_ms",
            "retries",
            "error_type",
            "limit_type",
            "trace_id",
            "cache_hit",
            "cost_saved",
        ]


def _aware(value: datetime) -> datetime:
    """Naive times are UTC."""
    return value.replace(tzinfo=UTC) if timezone.is_naive(value) else value


# Ids are bigints in Postgres: a larger number is no id at all (and would overflow the query: a 500).
ID = {"required": False, "min_value": 1, "max_value": 2**63 - 1}


class SpendFilterSerializer(serializers.Serializer):
    key = serializers.IntegerField(**ID)
    team = serializers.IntegerField(**ID)
    user = serializers.IntegerField(**ID)
    organization = serializers.IntegerField(**ID)
    customer = serializers.CharField(required=False, max_length=255)
    model = serializers.CharField(required=False, max_length=200)
    start = serializers.CharField(required=False, help_text="ISO date or datetime (inclusive).")
    end = serializers.CharField(required=False, help_text="ISO date (inclusive) or datetime (exclusive).")

    def _parse(self, value: str, *, end: bool) -> datetime:
        try:
            day = parse_date(value) if len(value) == 10 else None
            if day is not None:
                # A date means the whole day: an end date includes that day.
                parsed = datetime.combine(day, time.min) + timedelta(days=1 if end else 0)
            else:
                parsed = parse_datetime(value)
                if parsed is None:
                    raise ValueError
        except ValueError:
            raise serializers.ValidationError("Use an ISO date (2026-11-25) or datetime.") from None
        return _aware(parsed)

    def validate_start(self, value: str) -> datetime:
        return self._parse(value, end=False)

    def validate_end(self, value: str) -> datetime:
        return self._parse(value, end=True)


class SpendSummaryQuerySerializer(SpendFilterSerializer):
    group_by = serializers.ChoiceField(choices=sorted(GROUPINGS), default="model")


class SpendLogCursor(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class SpendSummaryRowSerializer(serializers.Serializer):
    group = serializers.CharField()
    value = serializers.JSONField(help_text="The id, model name, customer id or ISO day grouped by.")
    label = serializers.CharField()
    requests = serializers.IntegerField()
    errors = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cached_tokens = serializers.IntegerField()
    cost = serializers.CharField(help_text="USD, exact decimal as a string.")


class SpendSummarySerializer(serializers.Serializer):
    group_by = serializers.CharField()
    results = SpendSummaryRowSerializer(many=True)
    total_cost = serializers.CharField()


@extend_schema_view(list=extend_schema(parameters=[SpendFilterSerializer]))
class SpendLogViewSet(viewsets.ReadOnlyModelViewSet):
    """The ledger of the tenants you can see, newest first; filter by key, team, user, customer, model, dates."""

    serializer_class = SpendLogSerializer
    pagination_class = SpendLogCursor
    lookup_field = "request_id"
    lookup_value_regex = r"[^/]+"

    def get_queryset(self):
        query = SpendFilterSerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        qs = SpendLog.objects.restrict(self.request.user)
        return spend_logs_filter(qs, query.validated_data)


class SpendSummaryViewSet(viewsets.ViewSet):
    """Totals grouped by team, key, user, model, customer or day (UTC days), from the daily aggregates."""

    serializer_class = SpendSummarySerializer

    @extend_schema(parameters=[SpendSummaryQuerySerializer], responses=SpendSummarySerializer)
    def list(self, request):
        query = SpendSummaryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        rows = spend_summary(
            DailySpend.objects.restrict(request.user),
            monthly=MonthlySpend.objects.restrict(request.user),
            group_by=data["group_by"],
            start=data.get("start"),
            end=data.get("end"),
            params=data,
        )
        total = sum((row["cost"] for row in rows), Decimal(0))
        for row in rows:
            row["cost"] = f"{row['cost']:.10f}"
        return Response({"group_by": data["group_by"], "results": rows, "total_cost": f"{total:.10f}"})
