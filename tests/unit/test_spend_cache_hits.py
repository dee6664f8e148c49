"""A response-cache hit in the ledger: ingested with cost 0, ``cache_hit`` and ``cost_saved`` (the answer's
original cost), listed by the REST API and shown on the request explorer's detail page."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.test import Client

from apps.spend.ingest import spend_ingest_events
from apps.spend.models import SpendLog
from tests.factories import SpendEventFactory, VirtualKeyFactory
from tests.support.api import client_for

pytestmark = pytest.mark.django_db


def test_a_hit_is_recorded_free_with_the_cost_it_saved(alpha, alice):
    key = VirtualKeyFactory(team=alpha, user=alice, alias="cached-app")
    hit = SpendEventFactory(
        key=key, request_id=f"req_{uuid.uuid4().hex}", cost="0", cache_hit=True, cost_saved="0.0042"
    )
    miss = SpendEventFactory(key=key, request_id=f"req_{uuid.uuid4().hex}", cost="0.0042")
    assert spend_ingest_events([hit, miss]).inserted == 2
    row = SpendLog.objects.get(request_id=hit.request_id)
    assert (row.cost, row.cache_hit, row.cost_saved) == (0, True, Decimal("0.0042"))
    other = SpendLog.objects.get(request_id=miss.request_id)
    assert (other.cache_hit, other.cost_saved) == (False, 0)

    listed = client_for(alice).get(f"/api/v1/spend/logs/?key={key.pk}").json()["results"]
    by_id = {r["request_id"]: r for r in listed}
    assert by_id[hit.request_id]["cache_hit"] is True
    assert Decimal(by_id[hit.request_id]["cost_saved"]) == Decimal("0.0042")

    browser = Client()
    browser.force_login(alice)
    page = browser.get(f"/admin/spend/spendlog/{row.pk}/change/").content.decode()
    assert "Cache hit" in page and "0.0042" in page


def test_an_unreadable_cost_saved_is_recorded_as_zero(alpha):
    key = VirtualKeyFactory(team=alpha)
    event = SpendEventFactory(key=key, request_id=f"req_{uuid.uuid4().hex}", cache_hit=True, cost_saved="lots")
    assert spend_ingest_events([event]).inserted == 1
    assert SpendLog.objects.get(request_id=event.request_id).cost_saved == 0
