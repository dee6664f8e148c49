"""Scheduled reports (CSV and HTML content, stored, mailed, once per period), budget alerts, retention."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied
from django.test import Client

from apps.spend.events import SpendEvent
from apps.spend.ingest import spend_ingest_events
from apps.spend.models import BudgetAlert, BudgetWindow, Report, ReportRun, SpendLog
from apps.spend.reports import report_run, reports_run_due
from apps.spend.services import budget_alerts_send, budget_windows_roll, report_save, spend_logs_purge
from apps.teams.audit import Actor
from tests.factories import SpendEventFactory, VirtualKeyFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def event(key, *, cost: str, at: datetime, model: str = "gpt-4o-mini") -> SpendEvent:
    return SpendEventFactory(
        key=key,
        created_at=at.timestamp(),
        model=model,
        prompt_tokens=100,
        completion_tokens=50,
        cost=cost,
    )


@pytest.fixture
def october(alpha, alice):
    key = VirtualKeyFactory(team=alpha, user=alice, alias="=HYPERLINK(evil)")
    other = VirtualKeyFactory(team=alpha, alias="batch-jobs")
    spend_ingest_events(
        [event(key, cost="1.25", at=datetime(2026, 10, 3, tzinfo=UTC)) for _ in range(2)]
        + [event(other, cost="0.5", at=datetime(2026, 10, 31, 23, 59, tzinfo=UTC), model="claude")]
        + [event(other, cost="100", at=datetime(2026, 11, 1, 0, 0, tzinfo=UTC))]  # next month: not in the report
    )
    return key, other


def make_report(alpha, alice, **values) -> Report:
    defaults = {"name": "Monthly by key", "organization": alpha.organization, "team": alpha, "period": "monthly"}
    defaults |= {"group_by": "key", "format": "csv", "recipients": "alice@example.com, cfo@example.com"}
    values = defaults | values
    return report_save(actor=Actor(user=alice, source="admin"), **values)


def test_monthly_csv_report_content_stored_and_mailed(october, alpha, alice):
    report = make_report(alpha, alice)
    run = report_run(report, now=NOW)
    assert (run.period_start, run.period_end) == (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    rows = list(csv.reader(io.StringIO(run.file.read().decode())))
    assert rows[0] == ["group", "value", "label", "requests", "errors", "prompt_tokens", "completion_tokens", "cost"]
    body = {r[2]: (r[3], Decimal(r[7])) for r in rows[1:-1]}
    assert body == {"'=HYPERLINK(evil)": ("2", Decimal("2.5")), "batch-jobs": ("1", Decimal("0.5"))}
    assert rows[-1][0] == "total" and Decimal(rows[-1][7]) == Decimal("3.0")
    assert run.total_cost == Decimal("3.0") and run.row_count == 2
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert set(message.to) == {"alice@example.com", "cfo@example.com"}
    assert message.attachments[0][0].endswith(".csv")


def test_html_report_content_escapes_tenant_text(october, alpha, alice):
    report = make_report(alpha, alice, format="html", group_by="model", name="<b>Models</b>")
    run = report_run(report, now=NOW)
    html = run.file.read().decode()
    assert "&lt;b&gt;Models&lt;/b&gt;" in html and "<b>Models</b>" not in html
    assert "gpt-4o-mini" in html and "claude" in html
    assert "2.500000" in html and "3.000000" in html  # per-model and total cost
    assert "2026-10-01" in html and "2026-10-31" in html


def test_each_period_runs_once_and_due_reports_pick_the_last_period(october, alpha, alice):
    report = make_report(alpha, alice, period="daily", recipients="")
    assert len(reports_run_due(now=NOW)) == 1
    assert reports_run_due(now=NOW + timedelta(hours=1)) == []
    assert len(reports_run_due(now=NOW + timedelta(days=1))) == 1
    assert ReportRun.objects.filter(report=report).count() == 2
    assert mail.outbox == []


def test_a_team_admin_cant_set_up_an_org_wide_or_foreign_report(alpha, omega, alice, bob):
    with pytest.raises(PermissionDenied):
        make_report(alpha, alice, team=None)
    with pytest.raises(PermissionDenied):
        make_report(omega, alice)
    with pytest.raises(PermissionDenied):
        make_report(alpha, bob)


def test_report_file_downloads_in_the_admin_for_its_tenant_only(october, alpha, alice, charlie):
    run = report_run(make_report(alpha, alice), now=NOW)
    url = f"/admin/spend/reportrun/{run.pk}/download/"
    client = Client()
    client.force_login(alice)
    response = client.get(url)
    assert response.status_code == 200 and b"batch-jobs" in b"".join(response.streaming_content)
    client.force_login(charlie)
    assert client.get(url).status_code in (302, 403, 404)


# --- budget alerts ----------------------------------------------------------------------------


def test_soft_and_hard_alerts_are_sent_once_per_window(alpha, alice, settings, monkeypatch):
    posted = []
    monkeypatch.setattr("apps.spend.services._post_webhook", lambda payload: posted.append(payload) or "200")
    key = VirtualKeyFactory(
        team=alpha, user=alice, budget_duration="1d", soft_budget=Decimal("1"), max_budget=Decimal("2")
    )
    now = datetime.now(UTC)
    spend_ingest_events([event(key, cost="1.5", at=now)])
    assert [a.kind for a in budget_alerts_send()] == ["soft"]
    assert budget_alerts_send() == []  # once per window
    spend_ingest_events([event(key, cost="0.6", at=now)])
    assert [a.kind for a in budget_alerts_send()] == ["hard"]
    assert budget_alerts_send() == []
    assert [p["type"] for p in posted] == ["budget.soft", "budget.hard"]
    assert all(p["scope"] == "key" and p["scope_id"] == str(key.pk) for p in posted)
    assert "alice@example.com" in mail.outbox[0].to
    assert BudgetAlert.objects.count() == 2


def test_alerts_ignore_windows_of_another_duration_and_closed_windows(alpha):
    key = VirtualKeyFactory(team=alpha, budget_duration="1d", soft_budget=Decimal("0.1"))
    spend_ingest_events([event(key, cost="1", at=datetime.now(UTC) - timedelta(days=3))])
    assert budget_windows_roll() >= 1
    assert budget_alerts_send() == []
    assert BudgetWindow.objects.filter(closed_at__isnull=False).exists()  # history is kept


# --- retention --------------------------------------------------------------------------------


def test_retention_deletes_old_rows_in_batches_and_keeps_aggregates(alpha):
    key = VirtualKeyFactory(team=alpha)
    old = datetime.now(UTC) - timedelta(days=120)
    spend_ingest_events([event(key, cost="1", at=old) for _ in range(7)] + [event(key, cost="2", at=datetime.now(UTC))])
    assert spend_logs_purge(older_than_days=90, batch_size=3) == 7
    assert SpendLog.objects.count() == 1
    assert BudgetWindow.objects.get(scope="key").spent == Decimal(9)


def test_a_failing_mail_server_does_not_stop_the_webhook_or_resend(alpha, alice, monkeypatch):
    posted = []
    monkeypatch.setattr("apps.spend.services._post_webhook", lambda payload: posted.append(payload) or "200")

    def broken_mail(*args, **kwargs):
        raise ConnectionRefusedError("smtp down")

    monkeypatch.setattr("apps.spend.services.send_mail", broken_mail)
    key = VirtualKeyFactory(team=alpha, user=alice, budget_duration="1d", max_budget=Decimal("1"))
    spend_ingest_events([event(key, cost="2", at=datetime.now(UTC))])
    [alert] = budget_alerts_send()
    alert.refresh_from_db()
    assert (alert.kind, alert.emailed, alert.webhook_status) == ("hard", False, "200")
    assert len(posted) == 1 and budget_alerts_send() == []
