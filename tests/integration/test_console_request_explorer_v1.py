"""The request explorer on requests made through a real gateway: one that failed over between two
deployments, one refused by the key's limiter, a stream. Their spend events (read from the Redis
outbox stream and ingested as the worker ingests them) carry the timings the detail page shows, and
the explorer shows and exports them to alice (Alpha's admin) and never to charlie (Omega).
"""

from __future__ import annotations

import csv
import html
import io
import uuid

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.test import Client

from apps.spend.events import SpendEvent
from apps.spend.ingest import spend_ingest_events
from apps.spend.models import SpendLog
from apps.teams.models import Membership
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import deploy, http, make_key, spend_event

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _needs_redis():
    if not settings.REDIS_URL:
        pytest.skip("needs the Redis started by scripts/test.sh")


def chat(gateway, secret: str, model: str, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, **extra}
    return http("POST", gateway.v1 + "/chat/completions", headers={"Authorization": f"Bearer {secret}"}, json=body)


def ingested(request_id: str) -> tuple[dict, SpendLog]:
    """The request's spend event from the outbox stream, ingested into the ledger like a worker does."""
    event = spend_event(request_id)
    spend_ingest_events([SpendEvent.from_json(SpendEvent(**event).to_json())])
    return event, SpendLog.objects.get(request_id=request_id)


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def csv_rows(response) -> list[dict]:
    async def read(chunks) -> bytes:
        return b"".join([chunk async for chunk in chunks])

    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(async_to_sync(read)(response.streaming_content).decode())))


def test_a_failover_a_refusal_and_a_stream_in_the_explorer(gateway, upstream, tenant):
    Membership.objects.filter(user=tenant.alice).update(role="admin")
    name = f"explorer-{uuid.uuid4().hex[:8]}"
    failing, healthy = deploy(
        gateway,
        {"model_name": name, "provider": "openai", "model": "fail-500", "api_base": upstream.url, "priority": 0,
         "organization": tenant.acme},
        {"model_name": name, "provider": "openai", "model": "ok-model", "api_base": upstream.url, "priority": 1,
         "organization": tenant.acme},
    )  # fmt: skip
    key = make_key(tenant.alpha, tenant.alice, alias="explorer-app", rpm_limit=2)

    served = chat(gateway, key.secret, name)
    assert served.status_code == 200, served.text
    streamed = chat(gateway, key.secret, name, stream=True)
    assert streamed.status_code == 200, streamed.text
    refused = chat(gateway, key.secret, name)
    assert refused.status_code == 429 and refused.json()["error"]["limit_type"] == "requests"

    # The events carry what the detail page shows, from the timestamps the request path took anyway.
    event, row = ingested(served.headers["x-request-id"])
    assert event["retries"] == 1 and row.retries == 1
    assert [a["deployment_id"] for a in event["metadata"]["attempts"]] == [failing.pk, healthy.pk]
    assert 0 < event["upstream_ttfb_ms"] <= event["metadata"]["attempts"][1]["ms"] + 0.001
    assert 0 <= event["overhead_ms"] < event["latency_ms"]
    # Measured a little later than the header, over the same upstream time: never less than it said.
    assert event["overhead_ms"] >= float(served.headers["x-gateway-overhead-ms"]) - 0.01
    stream_event, _ = ingested(streamed.headers["x-request-id"])
    assert stream_event["ttft_ms"] is not None and stream_event["upstream_ttfb_ms"] > 0  # (maybe cooled down: no retry)
    assert 0 <= stream_event["overhead_ms"] < stream_event["latency_ms"]
    refusal, refused_row = ingested(refused.headers["x-request-id"])
    assert (refusal["status"], refusal["limit_type"], refusal["retries"], refusal["upstream_ttfb_ms"]) == (
        429,
        "requests",
        0,
        None,
    )
    assert refusal["metadata"]["limit_scope"] == "key"

    alice = login(tenant.alice)
    page = alice.get(f"/admin/spend/spendlog/{row.pk}/change/").content.decode()
    assert served.headers["x-request-id"] in page and "explorer-app" in page
    for label in ("gateway overhead", "upstream time to first byte", "time to first token", "deployments tried"):
        assert label in page.lower(), label
    attempts = page[page.index('id="gw-attempts"') :]
    assert html.escape(str(failing)) in attempts and "502 upstream_error" in attempts
    assert attempts.index(html.escape(str(failing))) < attempts.index(html.escape(str(healthy)))
    if hasattr(row, "trace_id"):  # recorded once the OpenTelemetry work is in
        assert "trace id" in page.lower()
    refused_page = alice.get(f"/admin/spend/spendlog/{refused_row.pk}/change/").content.decode()
    assert "429" in refused_page and "requests (key limit)" in refused_page

    listed = alice.get(f"/admin/spend/spendlog/?key={key.pk}&limit_type=requests").content.decode()
    assert refused.headers["x-request-id"] in listed and served.headers["x-request-id"] not in listed
    exported = csv_rows(alice.get(f"/admin/spend/spendlog/export/?key={key.pk}"))
    assert {r["request_id"] for r in exported} == {
        served.headers["x-request-id"],
        streamed.headers["x-request-id"],
        refused.headers["x-request-id"],
    }
    by_id = {r["request_id"]: r for r in exported}
    assert by_id[served.headers["x-request-id"]]["retries"] == "1"
    assert by_id[refused.headers["x-request-id"]]["limit_type"] == "requests"

    # charlie runs another organization: nothing of this is his to open or export.
    charlie = login(tenant.charlie)
    assert served.headers["x-request-id"] not in charlie.get(f"/admin/spend/spendlog/{row.pk}/change/").content.decode()
    assert csv_rows(charlie.get(f"/admin/spend/spendlog/export/?key={key.pk}")) == []
