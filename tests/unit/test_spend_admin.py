"""Spend in the admin: the ledger by tenant, reports set up by tenant admins, runs downloadable."""

from __future__ import annotations

import uuid

import pytest
from django.core import mail
from django.test import Client

from apps.spend.ingest import spend_ingest_events
from apps.spend.models import Report, ReportRun
from tests.factories import SpendEventFactory, VirtualKeyFactory

pytestmark = pytest.mark.django_db


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def spend(key, cost: str) -> None:
    spend_ingest_events([SpendEventFactory(key=key, request_id=f"req-{key.alias}-{uuid.uuid4().hex[:8]}", cost=cost)])


def test_the_ledger_pages_show_each_tenant_its_own_rows(alpha, omega, alice, charlie):
    spend(VirtualKeyFactory(team=alpha, user=alice, alias="acme-app"), "0.5")
    spend(VirtualKeyFactory(team=omega, user=charlie, alias="globex-app"), "0.7")
    for url in ("/admin/spend/spendlog/", "/admin/spend/dailyspend/", "/admin/spend/budgetwindow/"):
        alices = login(alice).get(url)
        charlies = login(charlie).get(url)
        assert alices.status_code == charlies.status_code == 200, url
    alices_log = login(alice).get("/admin/spend/spendlog/").content.decode()
    assert "req-acme-app" in alices_log and "req-globex-app" not in alices_log
    charlies_log = login(charlie).get("/admin/spend/spendlog/").content.decode()
    assert "req-globex-app" in charlies_log and "req-acme-app" not in charlies_log


def test_alice_sets_up_a_report_for_her_team_and_runs_it(alpha, omega, alice):
    spend(VirtualKeyFactory(team=alpha, user=alice, alias="acme-app"), "0.5")
    client = login(alice)
    form = {"name": "Alpha weekly", "organization": alpha.organization_id, "team": alpha.pk, "period": "daily",
            "group_by": "key", "format": "csv", "recipients": "alice@example.com", "enabled": "on"}  # fmt: skip
    response = client.post("/admin/spend/report/add/", form)
    assert response.status_code == 302, response.content.decode()[-2000:]
    report = Report.objects.get(name="Alpha weekly")
    assert report.created_by == alice
    # Not for a team she doesn't run.
    foreign = form | {"name": "Omega", "organization": omega.organization_id, "team": omega.pk}
    assert client.post("/admin/spend/report/add/", foreign).status_code == 200
    assert not Report.objects.filter(name="Omega").exists()

    response = client.post("/admin/spend/report/", {"action": "run_now", "_selected_action": [report.pk]})
    assert response.status_code == 302
    run = ReportRun.objects.get(report=report)
    assert mail.outbox and mail.outbox[0].to == ["alice@example.com"]
    page = client.get(f"/admin/spend/report/{report.pk}/change/").content.decode()
    assert f"/admin/spend/reportrun/{run.pk}/download/" in page


def test_bob_the_member_cannot_add_reports(alpha, bob):
    client = login(bob)
    assert client.get("/admin/spend/report/add/").status_code == 403
    form = {"name": "Sneaky", "organization": alpha.organization_id, "team": alpha.pk, "period": "daily",
            "group_by": "key", "format": "csv", "recipients": ""}  # fmt: skip
    client.post("/admin/spend/report/add/", form)
    assert not Report.objects.exists()


def test_a_row_whose_key_and_deployment_are_gone_still_renders(alpha, alice):
    from apps.spend.models import SpendLog

    key = VirtualKeyFactory(team=alpha, user=alice, alias="short-lived")
    spend(key, "0.1")
    row = SpendLog.objects.get()
    SpendLog.objects.filter(pk=row.pk).update(key_id=999_999, deployment_id=888_888)
    client = login(alice)
    assert client.get("/admin/spend/spendlog/").status_code == 200
    page = client.get(f"/admin/spend/spendlog/{row.pk}/change/")
    assert page.status_code == 200 and row.request_id in page.content.decode()
