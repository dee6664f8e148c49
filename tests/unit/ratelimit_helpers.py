"""Builders shared by the rate-limit tests: key contexts, request contexts, a chain on either backend."""

from __future__ import annotations

import itertools
import random
import uuid
from decimal import Decimal

import pytest
from django.conf import settings

from apps.proxy.context import CallResult, KeyContext, RequestContext, ScopeLimits
from apps.proxy.registry import Deployment, Group
from apps.ratelimit.backends.memory import MemoryBackend
from apps.ratelimit.backends.redis_backend import RedisBackend
from apps.ratelimit.chain import build_chain
from apps.ratelimit.errors import ProxyRateLimitError

_ids = itertools.count(1)
ALL = [
    "apps.ratelimit.middleware.MetricsMiddleware",
    "apps.ratelimit.middleware.BatchLimiter",
    "apps.ratelimit.middleware.ParallelRequestLimiter",
    "apps.ratelimit.middleware.RateLimiter",
    "apps.ratelimit.middleware.DeploymentCapacityLimiter",
    "apps.ratelimit.middleware.PriorityLimiter",
    "apps.ratelimit.middleware.BudgetLimiter",
    "apps.ratelimit.middleware.SessionLimiter",
]

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.integration),
]


def unique() -> str:
    """Scope ids unique per test, so tests never share counters in the one Redis of a test run."""
    return uuid.uuid4().hex[:12]


def make_backend(kind: str, **kwargs):
    if kind == "memory":
        return MemoryBackend(**kwargs)
    if not settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set (run through scripts/test.sh)")
    # Generous timeout: the test machine is shared; the fail-mode tests use their own backends.
    return RedisBackend(settings.REDIS_URL, timeout_ms=kwargs.pop("timeout_ms", 3000), **kwargs)


def make_chain(backend, paths: list[str] | None = None, customers=None):
    return build_chain(ALL if paths is None else paths, backend=backend, customers=customers)


class StubCustomers:
    """The chain's customer lookups without a database: ``{external_id: ScopeLimits}``, everyone else unlimited."""

    def __init__(self, limits: dict[str, ScopeLimits] | None = None) -> None:
        self.table = limits or {}

    async def limits(self, organization_id, external_id, time_zone: str = "UTC") -> ScopeLimits | None:
        return self.table.get(external_id)

    def expire(self) -> None:
        return None


def deployment(dep_id: int, model_name: str = "gpt-4o-mini", **fields) -> Deployment:
    """A deployment as the proxy's registry holds it (limits: rpm_limit, tpm_limit, max_parallel_requests)."""
    return Deployment(id=dep_id, model_name=model_name, provider="openai", model=model_name, **fields)


def group(model_name: str, *deployments: Deployment, **fields) -> Group:
    """A model group as the registry holds it (rpm_capacity, tpm_capacity, shared)."""
    return Group(model_name=model_name, deployments=deployments, **fields)


def scope(kind: str, scope_id: str | None = None, **limits) -> ScopeLimits:
    if "max_budget" in limits and limits["max_budget"] is not None:
        limits["max_budget"] = Decimal(str(limits["max_budget"]))
    return ScopeLimits(scope=kind, id=scope_id or unique(), **limits)


def key_context(*scopes: ScopeLimits, **fields) -> KeyContext:
    values = {
        "key_id": next(_ids),
        "key_alias": "ci-key",
        "team_id": 1,
        "team_name": "Alpha",
        "organization_id": 1,
        "organization_name": "Acme",
        "user_id": None,
        "allowed_models": None,
        "scopes": tuple(scopes),
    }
    values.update(fields)
    return KeyContext(**values)


def request(key: KeyContext, **fields) -> RequestContext:
    values = {
        "request_id": uuid.uuid4().hex,
        "key": key,
        "route": "/v1/chat/completions",
        "model": "gpt-4o-mini",
        "llm_provider": "openai",
        "estimated_prompt_tokens": 10,
        "max_output_tokens": 10,
    }
    values.update(fields)
    return RequestContext(**values)


def ok(status: int = 200, **fields) -> CallResult:
    return CallResult(status=status, llm_provider="openai", **fields)


async def admit(chain, ctx: RequestContext) -> None:
    """pre_call as the proxy does it."""
    await chain.pre_call(ctx)


async def call(chain, ctx: RequestContext, result: CallResult | None = None) -> None:
    """One whole request: pre_call, then post_call with ``result`` (post_call runs even on refusal)."""
    try:
        await chain.pre_call(ctx)
    finally:
        await chain.post_call(ctx, result or ok())


async def replay_on(
    backend, seed: int, budget: str, *, extra_scopes: tuple[ScopeLimits, ...] = (), dep: Deployment | None = None
) -> list[tuple]:
    """Admit and finish requests in a seeded random order on ``backend``; record every decision.

    The same seed gives the same workload on every backend, so their decisions must be equal.
    """
    rng = random.Random(seed)
    chain = make_chain(backend)
    key = key_context(
        scope("key", rpm_limit=70, tpm_limit=9000, max_parallel_requests=3, max_budget=budget),
        scope("team", rpm_limit=100, max_parallel_requests=5),
        *extra_scopes,
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
            deployment=dep,
        )
        try:
            await chain.pre_call(ctx)
        except ProxyRateLimitError as refusal:
            decisions.append(("refused", refusal.limit_type, refusal.scope))
            await chain.post_call(ctx, ok(429))
        else:
            decisions.append(("admitted", ctx.response_headers.get("x-ratelimit-remaining-requests")))
            in_flight.append(ctx)
    await backend.close()
    return decisions
