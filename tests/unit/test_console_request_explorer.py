"""The request explorer (/admin/spend/spendlog/): filters, tenant scoping, the detail page and the CSV.

alice runs Alpha (admin), bob is a member of Alpha, charlie runs Omega in another organization. Rows
are spend events ingested as the workers ingest them.
"""

from __future__ import annotations

import csv
import html
import io
import time
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from django.utils import timezone

from apps.spend.ingest import spend_ingest_events
from apps.spend.models import SpendLog
from tests.factories import DeploymentFactory, SpendEventFactory, VirtualKeyFactory

pytestmark = pytest.mark.django_db

LIST = "/admin/spend/spendlog/"
EXPORT = "/admin/spend/spendlog/export/"


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def record(key, **values) -> str:
    request_id = values.pop("request_id", f"req_{key.alias}_{uuid.uuid4().hex[:8]}")
    spend_ingest_events([SpendEventFactory(key=key, request_id=request_id, **values)])
    return request_id


def csv_body(response) -> list[dict]:
    """The streamed CSV read as the browser reads it (the body is an async iterator, as served by ASGI)."""

    async def read(chunks) -> bytes:
        return b"".join([chunk async for chunk in chunks])

    return list(csv.DictReader(io.StringIO(async_to_sync(read)(response.streaming_content).decode())))


def export_rows(client: Client, query: str = "") -> list[dict]:
    response = client.get(EXPORT + query)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="requests-')
    return csv_body(response)


@pytest.fixture
def ledger(alpha, omega, alice, bob, charlie):
    """Alpha: alice's app (a success, a 429 by tokens, a 502), bob's script; Omega: charlie's app."""
    alices = VirtualKeyFactory(team=alpha, user=alice, alias="alpha-app")
    bobs = VirtualKeyFactory(team=alpha, user=bob, alias="bob-script")
    charlies = VirtualKeyFactory(team=omega, user=charlie, alias="omega-app")
    now = time.time()
    ids = {
        "ok": record(alices, model="gpt-4o", cost="0.25", created_at=now - 60),
        "limited": record(alices, status=429, limit_type="tokens", error_type="rate_limit:tokens", created_at=now - 50),
        "failed": record(alices, status=502, error_type="upstream_error", created_at=now - 40),
        "old": record(alices, created_at=now - 3 * 86400),
        "bob": record(bobs, model="claude-3-5-haiku", created_at=now - 30),
        "charlie": record(charlies, model="gpt-4o", cost="9.99", created_at=now - 20),
    }
    return {"keys": {"alice": alices, "bob": bobs, "charlie": charlies}, "ids": ids}


def listed(client: Client, query: str = "") -> str:
    response = client.get(LIST + query)
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def test_each_viewer_lists_only_the_requests_of_their_tenant(ledger, alice, bob, charlie):
    ids = ledger["ids"]
    alices = listed(login(alice))
    assert all(ids[name] in alices for name in ("ok", "limited", "failed", "old", "bob"))
    assert ids["charlie"] not in alices and "omega-app" not in alices
    bobs = listed(login(bob))  # a member: his own requests
    assert ids["bob"] in bobs and ids["ok"] not in bobs and ids["charlie"] not in bobs
    charlies = listed(login(charlie))
    assert ids["charlie"] in charlies and "alpha-app" not in charlies
    # The filters offer only the viewer's own keys and teams.
    assert "omega-app" not in alices and "Omega" not in alices
    assert "alpha-app" not in charlies and "Alpha" not in charlies


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?status=429", {"limited"}),
        ("?status=server_error", {"failed"}),
        ("?status=ok", {"ok", "old", "bob"}),
        ("?limit_type=tokens", {"limited"}),
        ("?model=claude-3-5-haiku", {"bob"}),
        ("?period=24h", {"ok", "limited", "failed", "bob"}),
        ("?period=24h&status=ok", {"ok", "bob"}),
    ],
)
def test_alice_filters_her_requests(ledger, alice, query, expected):
    page = listed(login(alice), query)
    ids = ledger["ids"]
    shown = {name for name, request_id in ids.items() if request_id in page}
    assert shown == expected, (query, shown)


def test_filters_by_key_team_and_time_range(ledger, alice, alpha):
    ids, keys = ledger["ids"], ledger["keys"]
    client = login(alice)
    page = listed(client, f"?key={keys['bob'].pk}")
    assert ids["bob"] in page and ids["ok"] not in page
    page = listed(client, f"?team={alpha.pk}")
    assert ids["bob"] in page and ids["ok"] in page
    old = SpendLog.objects.get(request_id=ids["old"]).created_at
    minute = timezone.localtime(old).replace(second=0, microsecond=0)
    since, until = (minute.strftime("%Y-%m-%dT%H:%M"), (minute + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M"))
    page = listed(client, f"?since={since}&until={until}")
    assert ids["old"] in page and ids["ok"] not in page
    # The time form keeps the other filters, and shows the range back.
    page = listed(client, f"?since={since}&status=ok")
    assert 'name="status" value="ok"' in page and f'value="{since}"' in page


def test_another_tenants_key_or_team_id_shows_nothing_of_theirs(ledger, alice, omega):
    client = login(alice)
    page = listed(client, f"?key={ledger['keys']['charlie'].pk}")
    assert ledger["ids"]["charlie"] not in page
    page = listed(client, f"?team={omega.pk}")
    assert ledger["ids"]["charlie"] not in page


def test_a_deployment_filter_for_tenant_admins(ledger, alice, bob, acme):
    served = DeploymentFactory(organization=acme, model_name="acme-gpt")
    mine = record(ledger["keys"]["alice"], deployment_id=served.pk)
    client = login(alice)
    assert "acme-gpt" in listed(client)  # offered in the sidebar
    page = listed(client, f"?deployment={served.pk}")
    assert mine in page and ledger["ids"]["ok"] not in page
    assert "acme-gpt" not in listed(login(bob))  # members see no deployment rows, so no such filter


@pytest.mark.parametrize(
    "query",
    ["?status=teapot", "?limit_type=vibes", "?key=abc", "?key=99999999999999999999", "?period=1y", "?since=yesterday"],
)
def test_a_bad_filter_value_is_a_400_not_a_500(ledger, alice, query):
    client = login(alice)
    assert client.get(LIST + query).status_code == 400
    assert client.get(EXPORT + query).status_code == 400


def test_search_finds_a_request_by_its_exact_id_only(ledger, alice, charlie):
    ids = ledger["ids"]
    page = listed(login(alice), f"?q={ids['failed']}")
    assert ids["failed"] in page and ids["ok"] not in page
    assert ids["ok"] not in listed(login(alice), "?q=req_alpha")  # no substring scans
    assert ">0 requests<" in listed(login(charlie), f"?q={ids['failed']}")


def test_the_list_counts_at_most_the_cap(ledger, alice, monkeypatch):
    from apps.console.explorer import CappedCountPaginator

    monkeypatch.setattr(CappedCountPaginator, "count_cap", 3)
    page = listed(login(alice))
    assert "more than 3 requests" in page
    assert "request" in listed(login(alice), "?status=429") and "1 request<" in listed(login(alice), "?status=429")


def test_the_detail_page_shows_timings_tokens_cost_and_the_deployments_tried(alpha, alice, charlie, acme):
    first = DeploymentFactory(organization=acme, model_name="acme-gpt", model="flaky")
    second = DeploymentFactory(organization=acme, model_name="acme-gpt", model="steady")
    key = VirtualKeyFactory(team=alpha, user=alice, alias="alpha-app")
    attempts = [
        {"deployment_id": first.pk, "provider": "mock", "status": 502, "error": "upstream_error", "ms": 12.5},
        {"deployment_id": second.pk, "provider": "mock", "status": 200, "error": None, "ms": 40.0},
    ]
    request_id = record(
        key,
        deployment_id=second.pk,
        prompt_tokens=120,
        completion_tokens=40,
        cost="0.0031",
        latency_ms=55.25,
        overhead_ms=0.42,
        upstream_ttfb_ms=38.5,
        retries=1,
        metadata={"attempts": attempts},
    )
    row = SpendLog.objects.get(request_id=request_id)
    page = login(alice).get(f"{LIST}{row.pk}/change/").content.decode()
    for text in (request_id, "55.2 ms", "0.4 ms", "38.5 ms", "160", "0.0031", "alpha-app", "Alpha", "Acme"):
        assert text in page, text
    assert 'id="gw-attempts"' in page
    flaky, steady = html.escape(str(first)), html.escape(str(second))
    assert flaky in page and steady in page and "502 upstream_error" in page
    assert page.index(flaky) < page.index("502 upstream_error") < page.rindex(steady)
    # charlie cannot open it, nor find out it exists.
    response = login(charlie).get(f"{LIST}{row.pk}/change/")
    assert response.status_code in (302, 404) and request_id not in response.content.decode()


def test_the_csv_holds_the_filtered_rows_of_the_viewers_tenant(ledger, alice, charlie):
    ids = ledger["ids"]
    rows = export_rows(login(alice), "?period=24h")
    assert {r["request_id"] for r in rows} == {ids[n] for n in ("ok", "limited", "failed", "bob")}
    assert [r["request_id"] for r in rows] == [ids[n] for n in ("bob", "failed", "limited", "ok")]  # newest first
    limited = next(r for r in rows if r["request_id"] == ids["limited"])
    assert (limited["status"], limited["limit_type"], limited["team"], limited["key_alias"]) == (
        "429",
        "tokens",
        "Alpha",
        "alpha-app",
    )
    ok = next(r for r in rows if r["request_id"] == ids["ok"])
    assert ok["cost_usd"] == "0.25" and ok["model"] == "gpt-4o"
    assert {r["request_id"] for r in export_rows(login(charlie))} == {ids["charlie"]}


def test_the_csv_stops_at_the_row_cap_and_says_so(ledger, alice, settings):
    settings.SPEND_EXPORT_MAX_ROWS = 2
    client = login(alice)
    response = client.get(EXPORT)
    assert response["X-Export-Truncated"] == "1" and response["X-Export-Row-Cap"] == "2"
    assert len(csv_body(response)) == 2
    assert client.get(EXPORT + "?status=429")["X-Export-Truncated"] == "0"


def test_the_csv_keeps_tenant_typed_text_from_running_as_a_formula(alpha, alice):
    key = VirtualKeyFactory(team=alpha, user=alice, alias='=HYPERLINK("http://evil")')
    record(key, customer_id="+1-555")
    (row,) = export_rows(login(alice))
    assert row["key_alias"] == '\'=HYPERLINK("http://evil")' and row["customer_id"] == "'+1-555"


def test_people_without_a_tenant_get_no_explorer(ledger, db):
    from tests.factories import UserFactory

    stranger = login(UserFactory(username="stranger"))
    assert stranger.get(LIST).status_code == 403
    assert stranger.get(EXPORT).status_code == 403
    assert Client().get(EXPORT).status_code == 302  # to the login page


def test_a_refusals_page_names_the_limit_and_the_level_that_refused(alpha, alice):
    key = VirtualKeyFactory(team=alpha, user=alice, alias="alpha-app")
    request_id = record(key, status=429, limit_type="tokens", metadata={"limit_scope": "team"})
    row = SpendLog.objects.get(request_id=request_id)
    page = login(alice).get(f"{LIST}{row.pk}/change/").content.decode()
    assert "tokens (team limit)" in page


def test_the_detail_page_shows_each_guardrails_outcome_from_the_ingested_event(alpha, alice):
    key = VirtualKeyFactory(team=alpha, user=alice, alias="guarded-app")
    outcomes = {
        "pii": {"request": "masked", "answer": "passed", "categories": ["email"]},
        "moderation": {"request": "blocked", "categories": ["violence"]},
    }
    request_id = record(key, status=400, guardrails=outcomes)
    row = SpendLog.objects.get(request_id=request_id)
    assert row.guardrails == outcomes  # the spend event's outcomes, ingested as they were
    page = login(alice).get(f"{LIST}{row.pk}/change/").content.decode()
    assert "moderation: request blocked (violence); pii: request masked, answer passed (email)" in page
