"""What the limiter chain keeps about one request, in the context's opaque ``limiter_state`` slot.

The proxy's core (``apps.proxy.context``) never imports the limiters: it only carries this object for
them, from ``pre_call`` to ``post_call`` (and to the metrics of a request the chain never saw).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apps.proxy.context import RequestContext, ScopeLimits
from apps.ratelimit.errors import LimiterUnavailableError, ProxyRateLimitError
from apps.ratelimit.lookups import CustomerLimits
from apps.ratelimit.plan import Plan


@dataclass(slots=True)
class LimiterState:
    # The chain's end-user lookups, for the limiters that need a customer's limits (None outside the chain).
    customers: CustomerLimits | None = None
    # The middleware whose pre_call passed: only they get a post_call, in reverse order.
    passed: list[Any] = field(default_factory=list)
    # What every limiter asked to check, reserved in one step (created by the first limiter that adds a check).
    plan: Plan | None = None
    # The refusal pre_call raised, for the metrics (``Openai.ProxyRateLimitError``).
    refusal: ProxyRateLimitError | LimiterUnavailableError | None = None
    # Counted by the metrics already (each request is counted exactly once).
    metered: bool = False
    # The end user's limits, looked up once per request (``customer_known`` tells None "unlimited" from "not yet").
    customer: ScopeLimits | None = None
    customer_known: bool = False
    # Key, user, team, organization and end-user scopes, built once per request.
    scopes: list[ScopeLimits] | None = None


def limiter_state(ctx: RequestContext) -> LimiterState:
    """The request's limiter state, created on first use."""
    state = ctx.limiter_state
    if state is None:
        state = ctx.limiter_state = LimiterState()
    return state  # type: ignore[return-value]  # only this module writes the slot


def plan_for(ctx: RequestContext) -> Plan:
    """The request's plan, created on first use by whichever limiter runs first."""
    state = limiter_state(ctx)
    plan = state.plan
    if plan is None:
        plan = state.plan = Plan()
    return plan
