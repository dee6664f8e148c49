"""Same semantics on both backends: one random workload, replayed on memory and on Redis, same decisions."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from django.conf import settings

from apps.ratelimit.errors import ProxyRateLimitError
from tests.unit.ratelimit_helpers import key_context, make_backend, make_chain, ok, request, scope

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]


async def replay(backend_kind: str, seed: int, budget: str) -> list[tuple]:
    """Admit and finish requests in a seeded random order; record every decision."""
    rng = random.Random(seed)
    chain = make_chain(make_backend(backend_kind))
    key = key_context(
        scope("key", rpm_limit=70, tpm_limit=9000, max_parallel_requests=3, max_budget=budget),
        scope("team", rpm_limit=100, max_parallel_requests=5),
        session_max_iterations=15,
    )
    in_flight = []
    decisions: list[tuple] = []
    for _ in range(250):
        if in_flight and rng.random() < 0.45:
            ctx = in_flight.pop(rng.randrange(len(in_flight)))
            status = rng.choice([200, 200, 200, 502, 499])
            tokens = rng.randrange(0, 150)
            cost = Decimal(rng.randrange(0, 800)) / Decimal(1_000_000)
            await chain.post_call(ctx, ok(status, prompt_tokens=tokens // 2, completion_tokens=tokens // 2, cost=cost))
            continue
        ctx = request(
            key,
            estimated_prompt_tokens=rng.randrange(0, 100),
            max_output_tokens=rng.randrange(0, 200),
            estimated_cost=Decimal(rng.randrange(0, 1000)) / Decimal(1_000_000),
            session_id=rng.choice(["s1", "s2", None]),
        )
        try:
            await chain.pre_call(ctx)
        except ProxyRateLimitError as refusal:
            decisions.append(("refused", refusal.limit_type, refusal.scope))
            await chain.post_call(ctx, ok(429))
        else:
            decisions.append(("admitted", ctx.response_headers.get("x-ratelimit-remaining-requests")))
            in_flight.append(ctx)
    return decisions


@pytest.mark.parametrize(("seed", "budget"), [(1, "0.04"), (2, "0.02"), (3, "0.04")])
async def test_memory_and_redis_decide_alike(seed, budget):
    memory = await replay("memory", seed, budget)
    redis = await replay("redis", seed, budget)
    assert memory == redis
    refused_kinds = {d[1] for d in memory if d[0] == "refused"}
    admitted = sum(1 for d in memory if d[0] == "admitted")
    assert len(refused_kinds) >= 3 and admitted > 20  # the workload really crosses several limits
