"""Scheduled spend reports: the period a run covers, its CSV/HTML content, storing and mailing it."""

from __future__ import annotations

import csv
import io
import logging
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from apps.spend.models import DailySpend, MonthlySpend, Report, ReportRun
from apps.spend.selectors import spend_summary

logger = logging.getLogger(__name__)

CSV_COLUMNS = ["group", "value", "label", "requests", "errors", "prompt_tokens", "completion_tokens", "cost"]


def report_period(report: Report, now: datetime) -> tuple[date, date]:
    """The last complete period before ``now`` as [first day, day after last day) in UTC days."""
    today = now.astimezone(ZoneInfo("UTC")).date()
    if report.period == Report.Period.DAILY:
        return today - timedelta(days=1), today
    if report.period == Report.Period.WEEKLY:
        this_monday = today - timedelta(days=today.weekday())
        return this_monday - timedelta(days=7), this_monday
    first_this_month = today.replace(day=1)
    first_last_month = (first_this_month - timedelta(days=1)).replace(day=1)
    return first_last_month, first_this_month


def report_rows(report: Report, start: date, end: date) -> list[dict]:
    """The report's rows, computed through the tenant-scoped aggregates of its organization/team only."""
    qs = DailySpend.objects.filter(organization_id=report.organization_id)
    monthly = MonthlySpend.objects.filter(organization_id=report.organization_id)
    if report.team_id:
        qs = qs.filter(team_id=report.team_id)
        monthly = monthly.filter(team_id=report.team_id)
    return spend_summary(qs, monthly=monthly, group_by=report.group_by, start=start, end=end)


def render_csv(rows: list[dict]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_csv_safe(row[c]) for c in CSV_COLUMNS])
    total = sum((row["cost"] for row in rows), Decimal(0))
    writer.writerow(["total", "", "", sum(r["requests"] for r in rows), sum(r["errors"] for r in rows), "", "", total])
    return buffer.getvalue().encode()


def _csv_safe(value) -> str:
    """Neutralise spreadsheet formulas in tenant-controlled text (aliases, customer ids)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not _is_number(text) else text


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True


def render_html(report: Report, rows: list[dict], start: date, end: date) -> bytes:
    context = {
        "report": report,
        "rows": rows,
        "start": start,
        "last_day": end - timedelta(days=1),
        "total_cost": sum((row["cost"] for row in rows), Decimal(0)),
        "total_requests": sum(row["requests"] for row in rows),
    }
    return render_to_string("reports/spend_report.html", context).encode()


def report_run(report: Report, *, now: datetime | None = None, force: bool = False) -> ReportRun | None:
    """Generate, store and mail the report for its last complete period; once per period.

    Returns the new run, or None when that period already has one (unless ``force``).
    """
    start, end = report_period(report, now or timezone.now())
    utc = ZoneInfo("UTC")
    period_start = datetime(start.year, start.month, start.day, tzinfo=utc)
    period_end = datetime(end.year, end.month, end.day, tzinfo=utc)
    existing = ReportRun.objects.filter(report=report, period_start=period_start).first()
    if existing is not None:
        if not force:
            return None
        existing.file.delete(save=False)
        existing.delete()
    rows = report_rows(report, start, end)
    if report.format == Report.Format.HTML:
        content, extension, mime = render_html(report, rows, start, end), "html", "text/html"
    else:
        content, extension, mime = render_csv(rows), "csv", "text/csv"
    filename = f"spend-{report.pk}-{start:%Y%m%d}.{extension}"
    try:
        with transaction.atomic():
            run = ReportRun(
                report=report,
                period_start=period_start,
                period_end=period_end,
                format=report.format,
                row_count=len(rows),
                total_cost=sum((row["cost"] for row in rows), Decimal(0)),
            )
            run.file.save(filename, ContentFile(content), save=False)
            run.save()
    except IntegrityError:  # a concurrent run of the same period won
        return None
    recipients = report.recipient_list()
    if recipients:
        message = EmailMessage(
            subject=f"[LLM gateway] {report.name}: spend {start:%Y-%m-%d} to {end - timedelta(days=1):%Y-%m-%d}",
            body=f"Spend report '{report.name}' grouped by {report.group_by}: {len(rows)} rows, "
            f"total {run.total_cost:.6f} USD. The report is attached.",
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=recipients,
        )
        message.attach(filename, content, mime)
        try:
            message.send(fail_silently=False)
            run.mailed_to = ", ".join(recipients)
        except Exception as exc:  # the run is stored either way; the admin shows why it was not mailed
            logger.exception("report %s: mailing failed", report.pk)
            run.error = f"mail failed: {exc.__class__.__name__}"
        run.save(update_fields=["mailed_to", "error"])
    return run


def reports_run_due(*, now: datetime | None = None) -> list[ReportRun]:
    """Every enabled report whose last complete period has no run yet (beat calls this hourly)."""
    runs = []
    for report in Report.objects.filter(enabled=True).select_related("organization", "team"):
        run = report_run(report, now=now)
        if run is not None:
            runs.append(run)
    return runs
