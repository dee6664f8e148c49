"""A budget with little left against a request's worst case, end to end (real gateway, real mock upstream).

The mock's ``uses-max-tokens`` model answers with as many completion tokens as max_tokens allowed, so a
request that reached it unclamped would cost its whole worst case.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import deploy, http, make_key, spend_event, unique_name

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# 1e-6 USD per input token, 2e-6 per output token: max_tokens 500 is 0.001 USD.
PRICES = {"input_cost_per_token": "0.000001", "output_cost_per_token": "0.000002"}


def deploy_filling(gateway, upstream, provider: str = "openai") -> str:
    name = unique_name(provider)
    api_base = upstream.url if provider == "openai" else upstream.base
    spec = {"model_name": name, "provider": provider, "model": "uses-max-tokens", "api_base": api_base, **PRICES}
    deploy(gateway, spec)
    return name


def chat(gateway, key, model: str, max_tokens: int, **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens, **extra}
    return http("POST", f"{gateway.v1}/chat/completions", json=body, headers={"Authorization": f"Bearer {key.secret}"})


def usd(text: str, label: str) -> Decimal:
    found = re.search(label, text)
    assert found, (label, text)
    return Decimal(found.group(1))


def seconds_to_utc_midnight() -> float:
    now = datetime.now(UTC)
    return (datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC) - now).total_seconds()


def test_a_small_remaining_budget_says_estimate_versus_remaining_and_when_it_can_fit(gateway, upstream, tenant):
    model = deploy_filling(gateway, upstream)
    key = make_key(tenant.alpha, tenant.alice, alias="tight", max_budget=Decimal("0.001"), budget_duration="1d")
    spent = chat(gateway, key, model, 100)  # costs ~0.0002 (the mock uses all 100 tokens)
    assert spent.status_code == 200, spent.text
    time.sleep(0.5)  # its reservation is reconciled right after the answer

    refused = chat(gateway, key, model, 450)  # ~0.0009: fits an empty window, not what is left
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert (error["type"], error["limit_type"], error["scope"]) == ("rate_limit_error", "budget", "key")
    left = usd(error["message"], r"([0-9.]+) of 0\.001000 USD left in the current budget window")
    estimate = usd(error["message"], r"worst-case cost, ([0-9.]+) USD \(\d+ prompt tokens plus max_tokens 450\)")
    assert left < estimate <= Decimal("0.001"), error["message"]
    assert "key 'tight'" in error["message"] and "Lower max_tokens" in error["message"]
    # The window's end is when an empty budget takes it: that is the retry-after.
    assert abs(int(refused.headers["retry-after"]) - seconds_to_utc_midnight()) < 30

    never = chat(gateway, key, model, 5000)  # ~0.01: more than the whole budget, in any window
    assert never.status_code == 400, never.text
    assert "retry-after" not in never.headers
    error = never.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "max_tokens_exceeds_budget",
        "max_tokens",
    )
    assert "more than the whole budget of key 'tight' (0.001000 USD per budget window)" in error["message"]
    assert "max_tokens 5000" in error["message"]
    assert chat(gateway, key, model, 50).status_code == 200  # what does fit still runs


@pytest.mark.parametrize("route", ["chat", "messages"])
def test_a_clamping_key_runs_with_max_tokens_lowered_to_what_the_budget_pays(gateway, upstream, tenant, route):
    provider = "openai" if route == "chat" else "anthropic"
    model = deploy_filling(gateway, upstream, provider)
    tenant.alpha.budget_clamp_max_tokens = True  # the team's setting covers its keys
    tenant.alpha.save()
    key = make_key(tenant.alpha, tenant.alice, alias=f"clamp-{route}", max_budget=Decimal("0.001"))
    headers = {"Authorization": f"Bearer {key.secret}"}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100_000}
    path = "/chat/completions" if route == "chat" else "/messages"
    answered = http("POST", gateway.v1 + path, json=body, headers=headers)
    assert answered.status_code == 200, answered.text
    clamped = int(answered.headers["x-gateway-max-tokens-clamped"])
    seen = upstream.last("/chat/completions" if route == "chat" else "/v1/messages")["body"]
    assert seen["max_tokens"] == clamped and 400 <= clamped < 500  # 0.001 USD at 2e-6 a token, less the prompt
    # The upstream used every token it was allowed, and still the ledger stays within the budget.
    event = spend_event(answered.headers["x-request-id"])
    assert event["status"] == 200 and event["completion_tokens"] == clamped
    assert Decimal(event["cost"]) <= Decimal("0.001")

    # Nothing left for even one output token: refused, and the upstream never sees it.
    calls = len(upstream.requests)
    again = http("POST", gateway.v1 + path, json=body, headers=headers)
    assert again.status_code == 429, again.text
    assert again.json()["error"]["limit_type"] == "budget"
    assert len(upstream.requests) == calls
