"""Each limiter class on its own, on the memory backend and on the real Redis of the test run."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.ratelimit.errors import ProxyRateLimitError
from apps.ratelimit.middleware import priority_tier
from tests.unit.ratelimit_helpers import (
    BACKENDS,
    StubCustomers,
    admit,
    call,
    deployment,
    group,
    key_context,
    make_backend,
    make_chain,
    ok,
    request,
    scope,
)

pytestmark = pytest.mark.parametrize("backend_kind", BACKENDS)


async def refusal_of(chain, ctx) -> ProxyRateLimitError:
    with pytest.raises(ProxyRateLimitError) as info:
        await call(chain, ctx)
    return info.value


async def test_rpm_per_key_refuses_the_fourth_request_and_tags_it(backend_kind):
    chain = make_chain(make_backend(backend_kind), ["apps.ratelimit.middleware.RateLimiter"])
    key = key_context(scope("key", rpm_limit=3), key_alias="billing-bot")
    for _ in range(3):
        ctx = request(key)
        await call(chain, ctx)
        assert ctx.response_headers["x-ratelimit-limit-requests"] == "3"
    last = request(key)
    error = await refusal_of(chain, last)
    assert error.limit_type == "requests" and error.scope == "key"
    assert error.llm_provider == "openai" and error.model == "gpt-4o-mini"
    # The first request leaves the exactly-bounded window 61 s after its bucket began (seconds ago).
    assert 55 <= error.retry_after <= 61
    assert "billing-bot" in error.message
    body = error.to_body()["error"]
    assert body["type"] == "rate_limit_error" and body["code"] == "rate_limit_exceeded"
    headers = error.headers()
    assert headers["retry-after"] == str(error.retry_after)
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert error.exception_class == "Openai.ProxyRateLimitError"


async def test_a_refused_request_consumes_nothing_in_any_scope(backend_kind):
    """Key allows 10, team allows 2: the third request is refused by the team, the key keeps its 8 left."""
    chain = make_chain(make_backend(backend_kind), ["apps.ratelimit.middleware.RateLimiter"])
    team = scope("team", rpm_limit=2)
    key = key_context(scope("key", rpm_limit=10), team)
    await call(chain, request(key))
    await call(chain, request(key))
    for _ in range(3):
        error = await refusal_of(chain, request(key))
        assert error.scope == "team"
    # The same key under a roomier team: 2 admitted + this one, the refused ones left no trace.
    ctx = request(key_context(key.scopes[0], scope("team", rpm_limit=100)))
    await call(chain, ctx)
    assert ctx.response_headers["x-ratelimit-remaining-requests"] == "7"


async def test_tpm_reserves_the_estimate_and_reconciles_to_real_usage(backend_kind):
    chain = make_chain(make_backend(backend_kind), ["apps.ratelimit.middleware.RateLimiter"])
    key = key_context(scope("key", tpm_limit=100))
    first = request(key, estimated_prompt_tokens=20, max_output_tokens=40)
    await admit(chain, first)
    assert first.response_headers["x-ratelimit-remaining-tokens"] == "40"
    error = await refusal_of(chain, request(key, estimated_prompt_tokens=20, max_output_tokens=40))
    assert error.limit_type == "tokens" and error.limit == 100
    # The first call really used 15 tokens: 85 are free again.
    await chain.post_call(first, ok(prompt_tokens=10, completion_tokens=5))
    second = request(key, estimated_prompt_tokens=20, max_output_tokens=40)
    await admit(chain, second)
    assert second.response_headers["x-ratelimit-remaining-tokens"] == "25"


async def test_parallel_slots_are_released_on_every_outcome(backend_kind):
    chain = make_chain(make_backend(backend_kind), ["apps.ratelimit.middleware.ParallelRequestLimiter"])
    key = key_context(scope("key", max_parallel_requests=2), scope("team", max_parallel_requests=5))
    outcomes = [
        ok(),
        ok(502, error_type="upstream_error"),
        ok(504, error_type="upstream_timeout"),
        ok(499, error_type="client_disconnect"),
    ]
    for outcome in outcomes:
        a, b = request(key), request(key)
        await admit(chain, a)
        await admit(chain, b)
        error = await refusal_of(chain, request(key))
        assert error.limit_type == "concurrent_requests" and error.scope == "key"
        await chain.post_call(a, outcome)
        await chain.post_call(b, outcome)
    await admit(chain, request(key))


async def test_model_per_key_and_per_team_limits(backend_kind):
    chain = make_chain(make_backend(backend_kind), ["apps.ratelimit.middleware.RateLimiter"])
    key_id = scope("key").id
    per_key = scope("model", f"key:{key_id}:gpt-4o", model="gpt-4o", rpm_limit=1)
    per_team = scope("model", "team:9:o1", model="o1", rpm_limit=2)
    key = key_context(key_model_limits={"gpt-4o": per_key}, team_model_limits={"o1": per_team})
    await call(chain, request(key, model="gpt-4o"))
    error = await refusal_of(chain, request(key, model="gpt-4o"))
    assert error.scope == "model" and "gpt-4o" in error.message and error.model == "gpt-4o"
    await call(chain, request(key, model="o1"))
    await call(chain, request(key, model="o1"))
    assert (await refusal_of(chain, request(key, model="o1"))).scope == "model"
    await call(chain, request(key, model="gpt-4o-mini"))  # no per-model limit for this one


async def test_customer_limits_come_from_the_customer_table(backend_kind):
    limits = scope("customer", "1:end-user-7", rpm_limit=1)
    customers = StubCustomers({"end-user-7": limits})
    chain = make_chain(make_backend(backend_kind), ["apps.ratelimit.middleware.RateLimiter"], customers=customers)
    key = key_context(scope("key", rpm_limit=100))
    await call(chain, request(key, customer_id="end-user-7"))
    error = await refusal_of(chain, request(key, customer_id="end-user-7"))
    assert error.scope == "customer" and "end-user-7" in error.message
    await call(chain, request(key, customer_id="someone-else"))


async def test_deployment_capacity_is_shared_by_every_tenant(backend_kind):
    # The deployment the proxy picked, as its registry holds it (ctx.deployment).
    dep = deployment(int(scope("x").id[:6], 16) + 10_000_000, "gpt-4o-mini", rpm_limit=2)
    chain = make_chain(make_backend(backend_kind), ["apps.ratelimit.middleware.DeploymentCapacityLimiter"])
    await call(chain, request(key_context(), deployment_id=dep.id, deployment=dep))
    await call(chain, request(key_context(), deployment_id=dep.id, deployment=dep))
    error = await refusal_of(chain, request(key_context(), deployment_id=dep.id, deployment=dep))
    assert error.scope == "model" and error.limit == 2


async def test_priority_refuses_low_priority_first_when_the_group_saturates(backend_kind, settings):
    settings.PRIORITY_SATURATION_THRESHOLD = 0.5
    # The shared group the proxy resolved (ctx.group) and the deployment it picked in it (ctx.deployment).
    dep = deployment(1, f"grp-{scope('x').id}")
    routed = {"deployment_id": 1, "deployment": dep, "group": group(dep.model_name, dep, rpm_capacity=10)}
    chain = make_chain(make_backend(backend_kind), ["apps.ratelimit.middleware.PriorityLimiter"])
    low, normal, high = key_context(priority=0), key_context(priority=1), key_context(priority=3)
    for _ in range(5):  # up to the threshold (50 % of 10) everybody is served
        await call(chain, request(low, **routed))
    error = await refusal_of(chain, request(low, **routed))
    assert error.scope == "model" and "priority 0" in error.message
    await call(chain, request(normal, **routed))  # tier 0.75 -> 7 of 10
    await call(chain, request(normal, **routed))
    await refusal_of(chain, request(normal, **routed))
    await call(chain, request(high, **routed))  # tier 0.875 -> 8 of 10
    await refusal_of(chain, request(high, **routed))
    assert priority_tier(0, 0.8) == pytest.approx(0.8) and priority_tier(1, 0.8) == pytest.approx(0.9)


async def test_batch_charges_its_request_count(backend_kind):
    chain = make_chain(
        make_backend(backend_kind),
        ["apps.ratelimit.middleware.BatchLimiter", "apps.ratelimit.middleware.RateLimiter"],
    )
    key = key_context(scope("key", rpm_limit=50, tpm_limit=10_000))
    batch = request(key, route="/v1/batches", request_units=30, estimated_prompt_tokens=3000, max_output_tokens=3000)
    await call(chain, batch, ok())  # accepted: the upstream reports no usage yet
    assert batch.response_headers["x-ratelimit-remaining-requests"] == "20"
    assert batch.response_headers["x-ratelimit-remaining-tokens"] == "4000"
    error = await refusal_of(chain, request(key, route="/v1/batches", request_units=30))
    assert error.limit_type == "requests" and error.remaining == 20
    # The accepted batch keeps its token charge; a failed submission gives its tokens back.
    failed = request(key, route="/v1/batches", request_units=2, estimated_prompt_tokens=1000, max_output_tokens=1000)
    await call(chain, failed, ok(502, error_type="upstream_error"))
    probe = request(key, estimated_prompt_tokens=0, max_output_tokens=0)
    await call(chain, probe)
    assert probe.response_headers["x-ratelimit-remaining-tokens"] == "4000"
    # A chat call on another route is one request, whatever request_units says.
    chat = request(key, request_units=30)
    await call(chain, chat)
    assert chat.response_headers["x-ratelimit-remaining-requests"] == "16"


async def test_budget_reserves_the_estimate_and_names_the_refusing_scope(backend_kind):
    chain = make_chain(make_backend(backend_kind), ["apps.ratelimit.middleware.BudgetLimiter"])
    team = scope("team", max_budget="0.05", budget_duration="1d")
    key = key_context(scope("key", max_budget="1.00", budget_duration="1mo"), team)
    first, second = request(key, estimated_cost=Decimal("0.02")), request(key, estimated_cost=Decimal("0.02"))
    await admit(chain, first)
    await admit(chain, second)
    error = await refusal_of(chain, request(key, estimated_cost=Decimal("0.02")))
    assert error.limit_type == "budget" and error.scope == "team" and "Alpha" in error.message
    assert error.limit == 0.05 and error.remaining == pytest.approx(0.01)
    assert "x-ratelimit-limit-requests" not in error.headers()  # dollars are not request counts
    assert 1 <= error.retry_after <= 86_400  # until the team's day window ends
    # Both calls really cost 0.001: the reservation shrinks to the real cost.
    await chain.post_call(first, ok(cost=Decimal("0.001")))
    await chain.post_call(second, ok(cost=Decimal("0.001")))
    await call(chain, request(key, estimated_cost=Decimal("0.02")), ok(cost=Decimal("0.02")))
    await call(chain, request(key, estimated_cost=Decimal("0.02")), ok(cost=Decimal("0.02")))
    # 0.042 spent: a further 0.02 would cross 0.05; even a call estimated free is refused at the cap.
    await refusal_of(chain, request(key, estimated_cost=Decimal("0.02")))


async def test_an_exhausted_budget_refuses_even_free_calls(backend_kind):
    chain = make_chain(make_backend(backend_kind), ["apps.ratelimit.middleware.BudgetLimiter"])
    key = key_context(scope("key", max_budget="0.01"))
    await call(chain, request(key, estimated_cost=Decimal("0.01")), ok(cost=Decimal("0.01")))
    error = await refusal_of(chain, request(key, estimated_cost=Decimal(0)))
    assert error.scope == "key" and error.limit_type == "budget"


async def test_a_missing_budget_counter_is_seeded_from_the_ledger(backend_kind):
    seen = []

    async def seeder(scope_name, scope_id, window_id):
        seen.append((scope_name, window_id))
        return Decimal("0.049")

    chain = make_chain(make_backend(backend_kind, seeder=seeder), ["apps.ratelimit.middleware.BudgetLimiter"])
    key = key_context(scope("key", max_budget="0.05", budget_duration="1d"))
    error = await refusal_of(chain, request(key, estimated_cost=Decimal("0.002")))
    assert error.scope == "key"
    assert seen and seen[0][0] == "key" and seen[0][1].startswith("1d:")
    await call(chain, request(key, estimated_cost=Decimal("0.0005")))
    assert len(seen) == 1  # seeded once, then Redis/memory holds the total


async def test_session_iteration_cap_and_session_budget(backend_kind):
    chain = make_chain(make_backend(backend_kind), ["apps.ratelimit.middleware.SessionLimiter"])
    key = key_context(session_max_iterations=2, session_max_budget=Decimal("0.03"))
    for _ in range(2):
        await call(chain, request(key, session_id="agent-run-1"))
    error = await refusal_of(chain, request(key, session_id="agent-run-1"))
    assert error.limit_type == "max_iterations" and error.scope == "session"
    await call(chain, request(key, session_id="agent-run-2", estimated_cost=Decimal("0.02")), ok(cost=Decimal("0.02")))
    error = await refusal_of(chain, request(key, session_id="agent-run-2", estimated_cost=Decimal("0.02")))
    assert error.limit_type == "budget" and error.scope == "session"
    await call(chain, request(key))  # no session id: no session caps


async def test_the_full_chain_reserves_everything_or_nothing(backend_kind):
    """Budget refuses: the request, token and slot counters it would have charged stay untouched."""
    chain = make_chain(make_backend(backend_kind))
    key = key_context(scope("key", rpm_limit=5, tpm_limit=1000, max_parallel_requests=1, max_budget="0.01"))
    await call(chain, request(key, estimated_cost=Decimal("0.002")), ok(cost=Decimal("0.002")))
    error = await refusal_of(chain, request(key, estimated_cost=Decimal("0.009")))
    assert error.limit_type == "budget"
    ctx = request(key, estimated_cost=Decimal("0.001"))
    await admit(chain, ctx)
    assert ctx.response_headers["x-ratelimit-remaining-requests"] == "3"
    assert ctx.response_headers["x-ratelimit-remaining-tokens"] == "980"
    await chain.post_call(ctx, ok())


async def test_priority_also_reads_token_saturation(backend_kind, settings):
    settings.PRIORITY_SATURATION_THRESHOLD = 0.5
    dep = deployment(1, f"tok-{scope('x').id}")
    routed = {"deployment_id": 1, "deployment": dep, "group": group(dep.model_name, dep, tpm_capacity=1000)}
    chain = make_chain(make_backend(backend_kind), ["apps.ratelimit.middleware.PriorityLimiter"])
    low, high = key_context(priority=0), key_context(priority=1)
    big = {**routed, "estimated_prompt_tokens": 200, "max_output_tokens": 200}
    await call(chain, request(low, **big), ok(prompt_tokens=200, completion_tokens=200))  # 400 of 1000
    error = await refusal_of(chain, request(low, **big))  # 800 > 500: low priority waits
    assert error.limit_type == "tokens" and error.scope == "model"
    medium = {**routed, "estimated_prompt_tokens": 200, "max_output_tokens": 100}
    await call(chain, request(high, **medium), ok(prompt_tokens=150, completion_tokens=50))  # 700 <= 750, used 200
    # Real usage below the estimate gave 100 tokens back to the group: 600 + 150 fits the 750 tier exactly.
    await call(chain, request(high, estimated_prompt_tokens=150, max_output_tokens=0, **routed), ok(prompt_tokens=150))
    error = await refusal_of(chain, request(high, estimated_prompt_tokens=10, max_output_tokens=0, **routed))
    assert error.limit_type == "tokens" and "priority 1" in error.message
