"""``spend_totals_rebuild`` replays ledger rows (model instances) through the same ``totals_add`` that
ingestion feeds with plain ``LedgerRow`` values: both must produce the same daily and window totals."""

from __future__ import annotations

import time

import pytest

from apps.spend.ingest import spend_ingest_events
from apps.spend.models import BudgetWindow, DailySpend
from apps.spend.services import spend_totals_rebuild
from tests.factories import CustomerFactory, SpendEventFactory, UserFactory, VirtualKeyFactory

pytestmark = pytest.mark.integration


def totals() -> tuple[list, list]:
    daily = DailySpend.objects.values_list("bucket", "requests", "errors", "prompt_tokens", "completion_tokens", "cost")
    windows = BudgetWindow.objects.values_list("scope", "scope_id", "window_id", "spent", "requests", "tokens")
    return sorted(daily), sorted(windows)


def test_a_rebuild_from_the_ledger_gives_the_totals_ingestion_recorded(transactional_db):
    user = UserFactory(budget_duration="1d")
    key = VirtualKeyFactory(user=user, budget_duration="1h", model_limits={"m1": {"budget_duration": "1d"}})
    key.team.budget_duration = "7d"
    key.team.model_limits = {"m2": {"max_budget": 1}}
    key.team.save()
    org = key.organization
    org.time_zone = "Asia/Kathmandu"  # +05:45: hour and day windows start between UTC hours
    org.budget_duration = "1mo"
    org.save()
    CustomerFactory(organization=org, external_id="cust", budget_duration="1d")
    start = time.time() - 5 * 3600
    events = [
        SpendEventFactory(
            key=key,
            created_at=start + i * 41.3,  # rows across many 15-minute slots and window edges
            status=200 if i % 7 else 429,
            model=["m1", "m2", "x" * 300][i % 3],
            organization_id=org.pk,
            user_id=user.pk if i % 2 else None,
            customer_id=["cust", "", None, "other"][i % 4],
            prompt_tokens=i,
            completion_tokens=2 * i,
            cost=f"0.00{i % 10}1",
        )
        for i in range(400)
    ]
    for begin in range(0, len(events), 37):
        spend_ingest_events(events[begin : begin + 37])
    recorded = totals()
    scopes = {window[0] for window in recorded[1]}
    assert scopes == {"key", "model", "user", "team", "organization", "customer"}

    assert spend_totals_rebuild(batch_size=53) == 400
    assert totals() == recorded
