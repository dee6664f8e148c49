"""The objects that travel along one /v1 request. Shared contract between proxy, limiters and spend.

``KeyContext`` is immutable and cached per worker (built from the database on a cache miss only);
``RequestContext`` is per request and mutable; ``CallResult`` is what ``post_call`` hooks receive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from apps.proxy.registry import Deployment, Group

FALLBACK_PROVIDER = "gateway"


@dataclass(frozen=True, slots=True)
class ScopeLimits:
    """Limits of one tenant level that a request is charged against.

    ``scope`` is one of key, user, team, organization, customer; ``model`` is set for the
    per-model scopes (model-per-key, model-per-team), whose ``scope`` is "model".
    """

    scope: str
    id: str
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    max_budget: Decimal | None = None
    soft_budget: Decimal | None = None
    budget_duration: str = ""
    time_zone: str = "UTC"
    model: str | None = None


@dataclass(frozen=True, slots=True)
class KeyContext:
    key_id: int | None
    key_alias: str
    team_id: int | None
    team_name: str
    organization_id: int | None
    organization_name: str
    user_id: int | None
    # Effective model allow-list (key within team within organization); None means any model.
    allowed_models: frozenset[str] | None
    # Key, user, team, organization limits, most specific first.
    scopes: tuple[ScopeLimits, ...]
    # Per-model limits: {"gpt-4o": ScopeLimits(scope="model", id="key:1:gpt-4o", model="gpt-4o", ...)}
    key_model_limits: dict[str, ScopeLimits] = field(default_factory=dict)
    team_model_limits: dict[str, ScopeLimits] = field(default_factory=dict)
    priority: int = 1
    session_max_budget: Decimal | None = None
    session_max_iterations: int | None = None
    # Lower max_tokens to what the budgets can pay for instead of refusing (the key's or its team's setting).
    budget_clamp_max_tokens: bool = False
    # The team opted in to prompt and completion text in its traces (Team.trace_content); off by default.
    trace_content: bool = False
    # Response cache TTL in seconds (the key's setting, else its team's); 0: this key's answers are not cached.
    cache_ttl: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    # The key's guardrail policy (``apps.guardrails.policy.ResolvedPolicy``: organization, team and key merged,
    # compiled once with this context); None, the common case, costs a request one attribute check.
    guardrails: Any = None
    time_zone: str = "UTC"
    is_master: bool = False
    expires_at: float | None = None  # epoch seconds

    def allows_model(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models


@dataclass(slots=True)
class RequestContext:
    request_id: str
    key: KeyContext
    route: str  # e.g. "/v1/chat/completions"
    model: str = ""  # what the client asked for
    model_known: bool = False  # ``model`` resolved to a group this key's organization sees
    llm_provider: str = FALLBACK_PROVIDER  # provider of the deployment that would serve it
    deployment_id: int | None = None  # the deployment that serves (or would serve) it: the last attempt's
    # Set before the limiter chain runs: the group the name resolved to in the key's organization
    # (Registry.resolve) and the deployment the router picked first, from the proxy's own registry. The
    # capacity limiters read them (the deployment's RPM/TPM/parallel limits, a shared group's capacity).
    group: Group | None = None
    deployment: Deployment | None = None
    body: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    estimated_prompt_tokens: int = 0
    max_output_tokens: int = 0
    estimated_cost: Decimal = Decimal(0)
    # USD per output token of the deployment estimated against (0: not a token-generating call). A budget
    # clamp (apps/ratelimit/budget_fit.py) lowers max_output_tokens and the body's max_tokens with it.
    output_cost_per_token: Decimal = Decimal(0)
    customer_id: str | None = None  # the end user ("user" field of the body)
    session_id: str | None = None
    # Batch submissions charge many requests at once.
    request_units: int = 1
    # A response inside a realtime session, which already holds the parallel slot for its whole life
    # (apps/proxy/realtime.py): counted against RPM, TPM and budgets, but takes no second slot.
    slot_held: bool = False
    started_at: float = field(default_factory=time.perf_counter)
    # The limiter chain's own per-request state (``apps.ratelimit.state.LimiterState``: what it reserved, so
    # post_call releases and reconciles exactly that). Opaque here: the proxy's core never imports the limiters.
    limiter_state: object | None = None
    # The guardrails' per-request state (``apps.guardrails.base.GuardedCall``: masked text, outcomes for the
    # ledger); None when the key has no policy. Opaque here, like ``limiter_state``.
    guardrails: Any = None
    # Response headers limiters want to add (x-ratelimit-*).
    response_headers: dict[str, str] = field(default_factory=dict)
    # This request's OpenTelemetry span (``apps.proxy.tracing.RequestTrace``), None when tracing is off or the
    # request is not sampled; ``trace_id`` (32 hex) then is "", else it goes into the spend event.
    trace: Any = None
    trace_id: str = ""
    # Answered from the response cache (apps/proxy/response_cache): nothing goes upstream and nothing is
    # spent, so the limiters charge no tokens, budget or capacity, and requests and slots only as
    # PROXY_CACHE_HITS_COUNT_AGAINST_LIMITS says.
    cache_hit: bool = False


@dataclass(slots=True)
class CallResult:
    """What happened upstream. ``status`` is the HTTP status returned to the client."""

    status: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost: Decimal = Decimal(0)
    deployment_id: int | None = None
    llm_provider: str = FALLBACK_PROVIDER
    error_type: str | None = None  # e.g. "upstream_timeout", "client_disconnect", "ProxyRateLimitError"
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    overhead_ms: float | None = None  # the gateway's own time (see SpendEvent.overhead_ms)
    limit_scope: str | None = None  # a limiter's refusal: the scope whose limit refused (key, team, ...)
    cache_hit: bool = False  # answered from the response cache (cost 0)
    cost_saved: Decimal = Decimal(0)  # a hit: what the cached answer cost when the upstream produced it

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
