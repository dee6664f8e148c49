"""Same semantics on both backends: one random workload, replayed on memory and on Redis, same decisions."""

from __future__ import annotations

import pytest
from django.conf import settings

from tests.unit.ratelimit_helpers import make_backend, replay_on

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]


async def replay(backend_kind: str, seed: int, budget: str) -> list[tuple]:
    return await replay_on(make_backend(backend_kind), seed, budget)


@pytest.mark.parametrize(("seed", "budget"), [(1, "0.04"), (2, "0.02"), (3, "0.04")])
async def test_memory_and_redis_decide_alike(seed, budget):
    memory = await replay("memory", seed, budget)
    redis = await replay("redis", seed, budget)
    assert memory == redis
    refused_kinds = {d[1] for d in memory if d[0] == "refused"}
    admitted = sum(1 for d in memory if d[0] == "admitted")
    assert len(refused_kinds) >= 3 and admitted > 20  # the workload really crosses several limits
