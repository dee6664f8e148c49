"""Spend read API: tenant-scoped ledger with filters and cursor pages, summaries by group."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from apps.spend.events import SpendEvent
from apps.spend.ingest import spend_ingest_events
from tests.factories import SpendEventFactory, VirtualKeyFactory
from tests.support.api import client_for

pytestmark = pytest.mark.django_db


def event(key, *, cost: str, model: str = "gpt-4o-mini", at: float | None = None, customer=None) -> SpendEvent:
    return SpendEventFactory(
        key=key,
        created_at=at or time.time(),
        model=model,
        customer_id=customer,
        prompt_tokens=3,
        completion_tokens=2,
        cost=cost,
    )


@pytest.fixture
def ledger(alpha, omega, alice, bob, charlie):
    alice_key = VirtualKeyFactory(team=alpha, user=alice, alias="alice-key")
    bob_key = VirtualKeyFactory(team=alpha, user=bob, alias="bob-key")
    charlie_key = VirtualKeyFactory(team=omega, user=charlie, alias="charlie-key")
    events = [event(alice_key, cost="0.10") for _ in range(3)]
    events += [event(bob_key, cost="0.05", model="claude-haiku", customer="shop-42") for _ in range(2)]
    events += [event(charlie_key, cost="7.00")]
    spend_ingest_events(events)
    return {"alice": alice_key, "bob": bob_key, "charlie": charlie_key, "events": events}


def test_master_key_filters_by_key_and_rows_carry_the_contract_fields(ledger, master_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {master_key}")
    response = client.get(f"/api/v1/spend/logs/?key={ledger['alice'].pk}")
    assert response.status_code == 200
    rows = response.json()["results"]
    assert len(rows) == 3
    row = rows[0]
    assert {"request_id", "cost", "prompt_tokens", "completion_tokens", "model", "deployment", "status"} <= set(row)
    assert {"created_at"} <= set(row) and Decimal(row["cost"]) == Decimal("0.10")
    assert {r["request_id"] for r in rows} == {e.request_id for e in ledger["events"][:3]}


def test_charlie_cant_see_acme_spend_and_alice_cant_see_globex(ledger, alice, charlie):
    charlie_rows = client_for(charlie).get("/api/v1/spend/logs/").json()["results"]
    assert {r["key_alias"] for r in charlie_rows} == {"charlie-key"}
    assert client_for(charlie).get(f"/api/v1/spend/logs/?key={ledger['alice'].pk}").json()["results"] == []
    alice_rows = client_for(alice).get("/api/v1/spend/logs/").json()["results"]
    assert {r["key_alias"] for r in alice_rows} == {"alice-key", "bob-key"}


def test_bob_the_member_sees_only_his_own_spend(ledger, bob):
    rows = client_for(bob).get("/api/v1/spend/logs/").json()["results"]
    assert {r["key_alias"] for r in rows} == {"bob-key"}


def test_anonymous_is_refused(ledger):
    assert APIClient().get("/api/v1/spend/logs/").status_code in (401, 403)


def test_cursor_pages_walk_everything_once(ledger, alice):
    client = client_for(alice)
    seen, url = [], "/api/v1/spend/logs/?page_size=2"
    while url:
        body = client.get(url).json()
        seen += [r["request_id"] for r in body["results"]]
        url = body["next"]
    assert len(seen) == len(set(seen)) == 5


def test_filters_customer_model_and_dates(ledger, alice):
    client = client_for(alice)
    assert len(client.get("/api/v1/spend/logs/?customer=shop-42").json()["results"]) == 2
    assert len(client.get("/api/v1/spend/logs/?model=gpt-4o-mini").json()["results"]) == 3
    today = datetime.now(UTC).date().isoformat()
    assert len(client.get(f"/api/v1/spend/logs/?start={today}&end={today}").json()["results"]) == 5
    assert client.get("/api/v1/spend/logs/?end=2001-01-01").json()["results"] == []


@pytest.mark.parametrize("query", ["key=abc", "start=yesterday", "team=-1", "page_size=x&key=0"])
def test_bad_filters_are_400_not_500(ledger, alice, query):
    assert client_for(alice).get(f"/api/v1/spend/logs/?{query}").status_code == 400


def test_summary_by_team_key_model_day_is_exact_and_scoped(ledger, alice, alpha):
    client = client_for(alice)
    by_team = client.get("/api/v1/spend/summary/?group_by=team").json()
    assert [(r["value"], Decimal(r["cost"]), r["requests"]) for r in by_team["results"]] == [
        (alpha.pk, Decimal("0.40"), 5)
    ]
    by_key = client.get("/api/v1/spend/summary/?group_by=key").json()["results"]
    expected = [("alice-key", Decimal("0.3")), ("bob-key", Decimal("0.1"))]
    assert [(r["label"], Decimal(r["cost"])) for r in by_key] == expected
    by_model = client.get("/api/v1/spend/summary/?group_by=model").json()["results"]
    assert {r["value"]: r["requests"] for r in by_model} == {"gpt-4o-mini": 3, "claude-haiku": 2}
    by_day = client.get("/api/v1/spend/summary/?group_by=day").json()
    assert by_day["results"][0]["value"] == datetime.now(UTC).date().isoformat()
    assert Decimal(by_day["total_cost"]) == Decimal("0.40")
    assert client.get("/api/v1/spend/summary/?group_by=planet").status_code == 400


def test_summary_for_the_master_key_covers_every_tenant(ledger, master_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {master_key}")
    body = client.get("/api/v1/spend/summary/?group_by=user").json()
    assert Decimal(body["total_cost"]) == Decimal("7.40")


def test_one_row_by_request_id_for_its_tenant_only(ledger, alice, charlie):
    request_id = ledger["events"][0].request_id
    row = client_for(alice).get(f"/api/v1/spend/logs/{request_id}/")
    assert row.status_code == 200 and row.json()["request_id"] == request_id
    assert client_for(charlie).get(f"/api/v1/spend/logs/{request_id}/").status_code == 404


def test_the_openapi_schema_describes_the_spend_endpoints(root):
    schema = client_for(root).get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/spend/logs/" in paths and "/api/v1/spend/summary/" in paths
    names = {p["name"] for p in paths["/api/v1/spend/logs/"]["get"]["parameters"]}
    assert {"key", "team", "user", "customer", "model", "start", "end", "cursor"} <= names
