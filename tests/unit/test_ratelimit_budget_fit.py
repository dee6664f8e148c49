"""Budgets against a request's worst case: the refusal that says why, and the max_tokens clamp.

On the memory backend and on the real Redis of the test run; end to end in tests/e2e/test_proxy_budget_fit.py.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.proxy.errors import GatewayError
from apps.ratelimit.budget_fit import CLAMPED_HEADER
from apps.ratelimit.errors import ProxyRateLimitError
from tests.unit.ratelimit_helpers import (
    BACKENDS,
    admit,
    call,
    key_context,
    make_backend,
    make_chain,
    ok,
    request,
    scope,
)

pytestmark = pytest.mark.parametrize("backend_kind", BACKENDS)

OUT = Decimal("0.000002")  # USD per output token
IN = Decimal("0.000001")
CHAIN = ["apps.ratelimit.middleware.RateLimiter", "apps.ratelimit.middleware.BudgetLimiter"]


def chat(key, max_tokens: int, prompt_tokens: int = 100, **fields):
    """A chat request as the proxy estimates it: prompt x input price + max_tokens x output price."""
    return request(
        key,
        estimated_prompt_tokens=prompt_tokens,
        max_output_tokens=max_tokens,
        output_cost_per_token=OUT,
        estimated_cost=prompt_tokens * IN + max_tokens * OUT,
        body={"model": "gpt-4o-mini", "messages": [], "max_tokens": max_tokens},
        **fields,
    )


async def test_a_budget_too_small_for_the_estimate_says_estimate_and_remaining(backend_kind):
    chain = make_chain(make_backend(backend_kind), CHAIN)
    key = key_context(scope("key", max_budget="0.001", budget_duration="1d"), key_alias="tight")
    await call(chain, chat(key, 50), ok(cost=Decimal("0.0004")))
    with pytest.raises(ProxyRateLimitError) as refused:
        await call(chain, chat(key, 400))  # 0.0009: fits the empty window, not the 0.0006 left
    error = refused.value
    assert error.limit_type == "budget" and error.remaining == pytest.approx(0.0006)
    assert "0.000600 of 0.001000 USD left in the current budget window" in error.message
    assert "worst-case cost, 0.000900 USD (100 prompt tokens plus max_tokens 400)" in error.message
    assert "Retry after" in error.message and 1 <= error.retry_after <= 86_400  # the window's end


async def test_an_estimate_above_the_whole_budget_is_a_400_without_retry_after(backend_kind):
    chain = make_chain(make_backend(backend_kind), CHAIN)
    key = key_context(scope("key", max_budget="0.001", budget_duration="1d"), key_alias="tight")
    with pytest.raises(GatewayError) as refused:
        await call(chain, chat(key, 1000))
    error = refused.value
    assert (error.status, error.code, error.param) == (400, "max_tokens_exceeds_budget", "max_tokens")
    assert "retry-after" not in error.headers
    assert "0.002100 USD" in error.message and "(0.001000 USD per budget window)" in error.message


async def test_a_clamping_key_reserves_and_sends_the_lowered_max_tokens(backend_kind):
    chain = make_chain(make_backend(backend_kind), CHAIN)
    tokens_limited = scope("key", max_budget="0.001", tpm_limit=1_000_000)
    key = key_context(tokens_limited, budget_clamp_max_tokens=True)
    ctx = chat(key, 100_000)
    await admit(chain, ctx)
    # 0.001 USD less the prompt (100 tokens, with its margin: 141 x 1e-6) pays for 429 output tokens.
    assert ctx.max_output_tokens == 429 and ctx.body["max_tokens"] == 429
    assert ctx.response_headers[CLAMPED_HEADER] == "429"
    assert ctx.estimated_cost == 100 * IN + 429 * OUT
    # The token window was charged the clamped estimate too (prompt + 429), not 100,100.
    assert ctx.response_headers["x-ratelimit-remaining-tokens"] == str(1_000_000 - 529)
    await chain.post_call(ctx, ok(cost=ctx.estimated_cost))
    # What is left (0.000042) pays for no output token at all: refused, a 429 (an empty window would fit).
    with pytest.raises(ProxyRateLimitError) as refused:
        await call(chain, chat(key, 100_000))
    assert "Not even max_tokens 1 fits" in refused.value.message


async def test_the_tightest_budget_up_the_chain_sets_the_clamp(backend_kind):
    chain = make_chain(make_backend(backend_kind), CHAIN)
    team = scope("team", max_budget="0.0005")
    key = key_context(scope("key", max_budget="0.01"), team, budget_clamp_max_tokens=True)
    ctx = chat(key, 5000, prompt_tokens=10)
    await admit(chain, ctx)
    # The key (0.01) clamps to 4,985 first, then the team (0.0005) to 235:
    # (0.0005 - 10 x 1e-6 x 1.25 - 16 x 1e-6) / 2e-6, rounded down.
    assert ctx.max_output_tokens == 235
    await chain.post_call(ctx, ok(cost=ctx.estimated_cost))


async def test_without_the_setting_nothing_is_clamped(backend_kind):
    chain = make_chain(make_backend(backend_kind), CHAIN)
    key = key_context(scope("key", max_budget="0.001"))
    ctx = chat(key, 100_000)
    with pytest.raises(GatewayError):
        await call(chain, ctx)
    assert ctx.body["max_tokens"] == 100_000 and CLAMPED_HEADER not in ctx.response_headers
