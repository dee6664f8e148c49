"""The request explorer: the spend ledger in the admin (``/admin/spend/spendlog/``).

A list of finished /v1 requests filtered by key, team, model, deployment, status, limit type and time
range (``explorer_filters``), a detail page per request (timings, tokens, cost, the deployments it
tried, its trace id), and a CSV of the filtered rows (``explorer_export``). Everything comes through
``TenantScopedAdmin.get_queryset``, i.e. ``SpendLog.objects.restrict(user)``: a team admin sees,
opens and exports her team's requests only.

The ledger is the largest table: the list never counts it whole (``CappedCountPaginator``), offers no
column sorting and no date hierarchy (both would sort or scan it), searches by exact request or trace
id (a unique index), and its filters follow the indexes declared on ``SpendLog``.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from apps.console.explorer_export import csv_stream, is_truncated
from apps.console.explorer_filters import (
    DeploymentFilter,
    KeyFilter,
    LimitTypeFilter,
    ModelFilter,
    StatusFilter,
    TeamFilter,
    TimeRangeFilter,
)
from apps.proxy.models import ModelDeployment
from apps.spend.admin import ReadOnlyTenantAdmin
from apps.spend.models import SpendLog
from apps.teams.scoping import VIEW

# A tenant's capped count walks the newest rows until it found this many of its own: 10,000 took 0.5 s for
# an organization with 2 % of a 10 M-row ledger (bench/ledger_scale.py); 1,000 takes a tenth of that.
COUNT_CAP = 1_000
TRACE_ID = re.compile(r"[0-9a-f]{32}")  # W3C trace ids; request ids look like "req_..."


class CappedCountPaginator(Paginator):
    """Counts at most ``COUNT_CAP + 1`` rows (``SELECT COUNT(*) FROM (... LIMIT n)``): the list says
    "1,000+" instead of counting a ledger of millions on every page view."""

    count_cap = COUNT_CAP

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.count_cap + 1].count()


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


class RequestExplorerAdmin(ReadOnlyTenantAdmin):
    # Few, narrow columns: the list fits 1440 px beside the admin's navigation; the rest is on the detail page.
    list_display = ("finished", "key_link", "model_name", "outcome", "tokens", "cost_usd", "total")
    list_display_links = ("finished",)
    list_filter = (
        TimeRangeFilter,
        StatusFilter,
        LimitTypeFilter,
        KeyFilter,
        TeamFilter,
        ModelFilter,
        DeploymentFilter,
    )
    search_fields = ("request_id",)
    search_help_text = "An exact request id (x-request-id) or trace id."
    sortable_by = ()
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator
    list_per_page = 50
    list_select_related = False
    fieldsets = (
        ("Request", {"fields": ("request_id", "trace", "created_at", "route", "status", "refused_by", "error_type")}),
        ("Who", {"fields": ("organization_name", "team_name", "key_alias", "user_name", "customer_id", "session_id")}),
        ("Timing", {"fields": ("total_time", "overhead", "upstream_ttfb", "first_token")}),
        ("Routing", {"fields": ("model", "llm_provider", "served_by", "retries", "tried")}),
        (
            "Tokens and cost",
            {
                "fields": (
                    *("prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens", "cost"),
                    *("cache_hit", "cost_saved"),  # answered from the response cache (docs/caching.md)
                )
            },
        ),
        ("Guardrails", {"fields": ("guardrail_outcomes",)}),  # docs/guardrails.md
    )
    readonly_fields = (
        *("trace", "organization_name", "team_name", "user_name", "total_time", "overhead", "upstream_ttfb"),
        *("first_token", "served_by", "tried", "total_tokens", "refused_by", "guardrail_outcomes"),
    )

    # --- the list ------------------------------------------------------------------------------
    def changelist_view(self, request, extra_context=None):
        extra = {"title": "Requests", "export_cap": settings.SPEND_EXPORT_MAX_ROWS}
        return super().changelist_view(request, extra_context={**extra, **(extra_context or {})})

    def get_search_results(self, request, queryset, search_term):
        """Exact ids only: a substring search would read every row of the ledger."""
        term = search_term.strip()[:64]
        if not term:
            return queryset, False
        if self._has_trace_id and TRACE_ID.fullmatch(term.lower()):
            return queryset.filter(trace_id=term.lower()), False
        return queryset.filter(request_id=term), False

    @cached_property
    def _has_trace_id(self) -> bool:
        return any(f.name == "trace_id" for f in SpendLog._meta.get_fields())

    @admin.display(description="request")
    def finished(self, row: SpendLog) -> str:
        when = timezone.localtime(row.created_at).strftime("%Y-%m-%d %H:%M:%S")
        return format_html('{}<br><span class="gw-request-id">{}</span>', when, row.request_id)

    @admin.display(description="key")
    def key_link(self, row: SpendLog) -> str:
        if row.key_id is None:
            return row.key_alias or "-"
        return format_html('<a href="?key={}" title="Only this key">{}</a>', row.key_id, row.key_alias or row.key_id)

    @admin.display(description="model")
    def model_name(self, row: SpendLog) -> str:
        return row.model

    @admin.display(description="status")
    def outcome(self, row: SpendLog) -> str:
        css = "ok" if row.status < 400 else ("limited" if row.status == 429 else "error")
        label = f"{row.status} {row.limit_type}".strip()
        return format_html('<span class="gw-status gw-status-{}">{}</span>', css, label)

    @admin.display(description="tokens")
    def tokens(self, row: SpendLog) -> int:
        return row.total_tokens

    @admin.display(description="cost (USD)")
    def cost_usd(self, row: SpendLog) -> str:
        return format(row.cost.normalize(), "f") if row.cost else "0"

    @admin.display(description="total")
    def total(self, row: SpendLog) -> str:
        return _ms(row.latency_ms)

    # --- the detail page -----------------------------------------------------------------------
    @admin.display(description="trace id")
    def trace(self, row: SpendLog) -> str:
        return getattr(row, "trace_id", "") or "-"

    @admin.display(description="limit")
    def refused_by(self, row: SpendLog) -> str:
        """The limit that refused the request, and at which level (key, team, ...)."""
        if not row.limit_type:
            return "-"
        scope = row.metadata.get("limit_scope") if isinstance(row.metadata, dict) else None
        return f"{row.limit_type} ({scope} limit)" if scope else row.limit_type

    @admin.display(description="outcomes")
    def guardrail_outcomes(self, row: SpendLog) -> str:
        """Each guardrail's outcome per stage ("pii: request masked, answer passed (email)"); types, never text."""
        outcomes = row.guardrails if isinstance(row.guardrails, dict) else {}
        lines = []
        for name, entry in sorted(outcomes.items()):
            if not isinstance(entry, dict):
                continue
            stages = ", ".join(f"{stage} {entry[stage]}" for stage in ("request", "answer") if stage in entry)
            categories = entry.get("categories")
            lines.append(f"{name}: {stages}" + (f" ({', '.join(map(str, categories))})" if categories else ""))
        return "; ".join(lines) or "-"

    @admin.display(description="organization")
    def organization_name(self, row: SpendLog) -> str:
        return row.organization.name if self._exists(row, "organization") else "-"

    @admin.display(description="team")
    def team_name(self, row: SpendLog) -> str:
        return row.team.name if self._exists(row, "team") else "-"

    @admin.display(description="user")
    def user_name(self, row: SpendLog) -> str:
        return row.user.get_username() if self._exists(row, "user") else "-"

    @staticmethod
    def _exists(row: SpendLog, name: str) -> bool:
        """A ledger row outlives its team, key or user (loose foreign keys): a dangling id shows as "-"."""
        if getattr(row, f"{name}_id") is None:
            return False
        try:
            getattr(row, name)
        except ObjectDoesNotExist:
            return False
        return True

    @admin.display(description="total time")
    def total_time(self, row: SpendLog) -> str:
        return _ms(row.latency_ms)

    @admin.display(description="gateway overhead")
    def overhead(self, row: SpendLog) -> str:
        return _ms(row.overhead_ms)

    @admin.display(description="upstream time to first byte")
    def upstream_ttfb(self, row: SpendLog) -> str:
        return _ms(row.upstream_ttfb_ms)

    @admin.display(description="time to first token")
    def first_token(self, row: SpendLog) -> str:
        return _ms(row.ttft_ms)

    @admin.display(description="total tokens")
    def total_tokens(self, row: SpendLog) -> int:
        return row.total_tokens

    @admin.display(description="served by")
    def served_by(self, row: SpendLog) -> str:
        if row.deployment_id is None:
            return "-"
        return self._deployment_labels(row).get(row.deployment_id, f"deployment {row.deployment_id}")

    @admin.display(description="deployments tried")
    def tried(self, row: SpendLog) -> str:
        """Every attempt in order (recorded when there was more than one), else the one that served."""
        attempts = row.metadata.get("attempts") if isinstance(row.metadata, dict) else None
        if not isinstance(attempts, list) or not attempts:
            return self.served_by(row)
        labels = self._deployment_labels(row)
        lines = []
        for number, attempt in enumerate(attempts, start=1):
            if not isinstance(attempt, dict):
                continue
            dep = attempt.get("deployment_id")
            outcome = "ok" if attempt.get("status") == 200 else f"{attempt.get('status')} {attempt.get('error') or ''}"
            label = labels.get(dep, f"deployment {dep}")
            lines.append((number, label, outcome.strip(), attempt.get("ms", "-")))
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td></tr>", lines)
        head = "<tr><th>#</th><th>deployment</th><th>outcome</th><th>time</th></tr>"
        return format_html('<table class="gw-attempts" id="gw-attempts">{}{}</table>', format_html(head), rows)

    @staticmethod
    def _deployment_labels(row: SpendLog) -> dict[int, str]:
        return getattr(row, "deployment_labels", {})

    def get_object(self, request, object_id, from_field=None):
        """The row (through the restricted queryset), with the names of the deployments it mentions that
        the viewer may see as rows (tenant admins); others read "deployment <id>"."""
        row = super().get_object(request, object_id, from_field)
        if row is not None:
            ids = {row.deployment_id} if row.deployment_id else set()
            attempts = row.metadata.get("attempts") if isinstance(row.metadata, dict) else None
            for attempt in attempts if isinstance(attempts, list) else ():
                if isinstance(attempt, dict) and isinstance(attempt.get("deployment_id"), int):
                    ids.add(attempt["deployment_id"])
            visible = ModelDeployment.objects.restrict(request.user, VIEW).filter(pk__in=ids)
            row.deployment_labels = {d.pk: str(d) for d in visible}
        return row

    # --- the CSV -------------------------------------------------------------------------------
    def get_urls(self):
        export = path("export/", self.admin_site.admin_view(self.export_view), name="spend_spendlog_export")
        return [export, *super().get_urls()]

    def export_view(self, request):
        """The rows the list shows with the same filters, as CSV, at most ``SPEND_EXPORT_MAX_ROWS``."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)  # a bad filter value is a 400 (BadFilterValue)
        queryset = changelist.get_queryset(request)
        cap = settings.SPEND_EXPORT_MAX_ROWS
        response = StreamingHttpResponse(csv_stream(queryset, cap), content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="requests-{stamp}.csv"'
        response["X-Export-Row-Cap"] = str(cap)
        response["X-Export-Truncated"] = "1" if is_truncated(queryset, cap) else "0"
        return response

    def export_url(self) -> str:
        return reverse("admin:spend_spendlog_export")
