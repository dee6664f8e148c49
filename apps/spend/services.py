"""Spend writes run by Celery beat: window roll, budget alerts, retention, rebuilding totals."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.spend.budgets import Budget, budgets_for
from apps.spend.ingest import totals_add
from apps.spend.models import BudgetAlert, BudgetWindow, DailySpend, MonthlySpend, Report, SpendLog
from apps.spend.partitions import spendlog_partitions_expire
from apps.teams.audit import audit_record
from apps.teams.models import Membership, User
from apps.teams.scoping import CHANGE, require

logger = logging.getLogger(__name__)


def budget_windows_roll(*, now=None) -> int:
    """Close windows whose end has passed; their rows stay as the history. Returns how many closed.

    Nothing depends on this running on time: a request always charges the window its time falls in.
    """
    now = now or timezone.now()
    return BudgetWindow.objects.filter(closed_at__isnull=True, window_end__lte=now).update(closed_at=now)


def _admin_emails(*, organization_id: int | None, team_id: int | None) -> set[str]:
    emails: set[str] = set()
    if organization_id:
        emails.update(
            Membership.objects.filter(organization_id=organization_id, team__isnull=True, role__in=("owner", "admin"))
            .exclude(user__email="")
            .values_list("user__email", flat=True)
        )
    if team_id:
        emails.update(
            Membership.objects.filter(team_id=team_id, role__in=("owner", "admin"))
            .exclude(user__email="")
            .values_list("user__email", flat=True)
        )
    return emails


def _alert_recipients(budget: Budget) -> list[str]:
    emails = _admin_emails(organization_id=budget.organization_id, team_id=budget.team_id)
    if budget.user_id:
        email = User.objects.filter(pk=budget.user_id).values_list("email", flat=True).first()
        if email:
            emails.add(email)
    return sorted(emails)


def _post_webhook(payload: dict) -> str:
    url = settings.GATEWAY_ALERT_WEBHOOK_URL
    if not url:
        return ""
    if not url.startswith(("http://", "https://")):
        return "invalid url"
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return str(response.status)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        logger.warning("budget alert webhook failed: %s", exc.__class__.__name__)
        return f"failed: {exc.__class__.__name__}"


def _send_alert(alert: BudgetAlert, budget: Budget, window: BudgetWindow) -> None:
    what = "soft budget" if alert.kind == BudgetAlert.Kind.SOFT else "budget"
    subject = f"[LLM gateway] {budget.label} reached its {what} ({alert.spent:.4f} of {alert.threshold:.4f} USD)"
    body = (
        f"{budget.label} has spent {alert.spent:.6f} USD in window {window.window_id} "
        f"({window.window_start:%Y-%m-%d %H:%M} to {window.window_end:%Y-%m-%d %H:%M} UTC); "
        f"its {what} is {alert.threshold:.6f} USD.\n"
    )
    if alert.kind == BudgetAlert.Kind.HARD:
        body += "Requests charged to it are refused until the window ends or the budget is raised.\n"
    recipients = _alert_recipients(budget)
    alert.recipients = ", ".join(recipients)
    if recipients:
        try:
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=False)
            alert.emailed = True
        except Exception:  # recorded on the alert (emailed stays False); the webhook still goes out
            logger.exception("budget alert %s: e-mail failed", alert.pk)
    alert.webhook_status = _post_webhook(
        {
            "type": f"budget.{alert.kind}",
            "scope": alert.scope,
            "scope_id": alert.scope_id,
            "label": budget.label,
            "window_id": alert.window_id,
            "window_end": window.window_end.isoformat(),
            "spent": str(alert.spent),
            "threshold": str(alert.threshold),
            "organization_id": budget.organization_id,
            "team_id": budget.team_id,
        }
    )
    alert.save(update_fields=["recipients", "emailed", "webhook_status"])


def budget_alerts_send(*, now=None) -> list[BudgetAlert]:
    """Soft- and hard-budget alerts for open windows that crossed a threshold; each once per window.

    The alert row is created first (UNIQUE per scope, window and kind), so two beat runs racing
    cannot both send; a failed e-mail or webhook is recorded on the row, not retried.
    """
    now = now or timezone.now()
    windows = list(BudgetWindow.objects.filter(closed_at__isnull=True, window_end__gt=now, spent__gt=0))
    budgets = budgets_for({(w.scope, w.scope_id) for w in windows})
    sent: list[BudgetAlert] = []
    for window in windows:
        budget = budgets.get((window.scope, window.scope_id))
        if budget is None or not budget.expects_window(window.window_id):
            continue
        for kind, threshold in (
            (BudgetAlert.Kind.SOFT, budget.soft_budget),
            (BudgetAlert.Kind.HARD, budget.max_budget),
        ):
            if threshold is None or window.spent < threshold:
                continue
            try:
                with transaction.atomic():
                    alert, created = BudgetAlert.objects.get_or_create(
                        scope=window.scope,
                        scope_id=window.scope_id,
                        window_id=window.window_id,
                        kind=kind,
                        defaults={
                            "threshold": threshold,
                            "spent": window.spent,
                            "organization_id": budget.organization_id,
                            "team_id": budget.team_id,
                        },
                    )
            except IntegrityError:
                continue
            if created:
                _send_alert(alert, budget, window)
                sent.append(alert)
    return sent


def spend_logs_purge(*, older_than_days: int | None = None, batch_size: int = 5000, now=None) -> int:
    """Remove ledger rows past retention; returns how many rows went. Aggregates stay.

    On a partitioned ledger (Postgres) the months that ended before the cutoff are detached and dropped
    whole (``apps.spend.partitions``); only the boundary month, when the cutoff is not month-aligned, and the
    DEFAULT partition still have rows deleted. Those deletes go in batches (short transactions, no table lock).
    """
    days = older_than_days or settings.SPEND_LOG_RETENTION_DAYS
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted = sum(spendlog_partitions_expire(cutoff=cutoff).values())
    old = SpendLog.objects.filter(created_at__lt=cutoff)
    while True:
        ids = list(old.order_by("id").values_list("id", flat=True)[:batch_size])
        if not ids:
            return deleted
        # created_at in the delete too: Postgres then only looks in the partitions the cutoff reaches.
        deleted += old.filter(id__in=ids).delete()[0]


def spend_totals_rebuild(*, batch_size: int = 2000) -> int:
    """Recompute ``DailySpend``, ``MonthlySpend`` and ``BudgetWindow`` from the ledger, in one transaction.

    Closed windows whose ledger rows were purged by retention keep their recorded totals: the ledger
    no longer holds what they counted. Returns the number of ledger rows replayed.
    """
    replayed = 0
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Ingestion waits while we rebuild (SHARE blocks inserts, not reads): totals match the ledger.
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {connection.ops.quote_name(SpendLog._meta.db_table)} IN SHARE MODE")
        oldest = SpendLog.objects.order_by("created_at").values_list("created_at", flat=True).first()
        DailySpend.objects.all().delete()
        MonthlySpend.objects.all().delete()
        windows = BudgetWindow.objects.all()
        if oldest is not None:
            windows = windows.filter(window_end__gt=oldest)
        windows.delete()
        last_id = 0
        while True:
            rows = list(SpendLog.objects.filter(id__gt=last_id).order_by("id")[:batch_size])
            if not rows:
                break
            totals_add(rows)
            replayed += len(rows)
            last_id = rows[-1].id
    return replayed


REPORT_FIELDS = ("name", "organization", "team", "period", "group_by", "format", "recipients", "enabled")


def report_save(*, actor, report=None, **values):
    """Create or update a scheduled report. Only admins of its organization, or of its team, may.

    A team admin's report must name their team: the organization-wide view is the org admins'.
    """
    unknown = set(values) - set(REPORT_FIELDS)
    if unknown:
        raise ValidationError({name: "unknown field" for name in unknown})
    report = report or Report(created_by=actor.user_row)
    for name, value in values.items():
        setattr(report, name, value)
    if report.team_id and report.team.organization_id != report.organization_id:
        raise ValidationError({"team": "The team belongs to another organization."})
    require(actor.user, CHANGE, report, message="Only admins of this organization or team may set up its reports.")
    for address in report.recipient_list():
        try:
            validate_email(address)
        except ValidationError:
            raise ValidationError({"recipients": f"Not an e-mail address: {address}"}) from None
    with transaction.atomic():
        report.full_clean()
        creating = report.pk is None
        report.save()
        audit_record(
            actor=actor,
            action="report.create" if creating else "report.update",
            obj=report,
            organization=report.organization,
            team=report.team,
            changes={k: v for k, v in values.items() if k not in ("organization", "team")},
        )
    return report


def spend_opening_balance_record(
    *,
    request_id: str,
    amount: Decimal,
    organization_id: int,
    team_id: int,
    key_id: int | None = None,
    user_id: int | None = None,
    key_alias: str = "",
    route: str = "import",
) -> SpendLog:
    """Spend made before the gateway (e.g. in LiteLLM), as one ledger row counted in today's totals and windows.

    Idempotent by ``request_id``: importing twice counts the money once, like a replayed outbox.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # The ledger is unique on (request id, time), and this row's time is "now": two imports racing
            # would both insert. One lock per request id makes the second see the first's row.
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ["spend-import:" + request_id])
        existing = SpendLog.objects.filter(request_id=request_id).first()
        if existing is not None:
            return existing
        row = SpendLog.objects.create(
            request_id=request_id,
            created_at=timezone.now(),
            route=route,
            status=200,
            organization_id=organization_id,
            team_id=team_id,
            key_id=key_id,
            user_id=user_id,
            key_alias=key_alias[:200],
            cost=amount,
        )
        totals_add([row])
    return row
