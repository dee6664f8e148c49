"""The tenant scopes one request is charged against, and how a refusal names them.

Shared by the limiters (``middleware.py``) and the chain (which refuses a blocked end user whichever
limiters are configured); computed once per request and kept in its ``LimiterState``.
"""

from __future__ import annotations

from apps.proxy.context import RequestContext, ScopeLimits
from apps.ratelimit.state import limiter_state


def scope_label(ctx: RequestContext, scope: ScopeLimits) -> str:
    """How a refusal names the scope: by admin-given names, never by secret."""
    key = ctx.key
    if scope.scope == "key":
        return f"key '{key.key_alias}'" if key.key_alias else "this key"
    if scope.scope == "team":
        return f"team '{key.team_name}'" if key.team_name else "the team"
    if scope.scope == "organization":
        return f"organization '{key.organization_name}'" if key.organization_name else "the organization"
    if scope.scope == "user":
        return "the key's user"
    if scope.scope == "customer":
        return f"customer '{ctx.customer_id}'"
    if scope.scope == "model":
        owner = "key" if scope.id.startswith("key") else "team"
        return f"model '{scope.model}' on this {owner}"
    return scope.scope


async def customer_scope(ctx: RequestContext) -> ScopeLimits | None:
    """The end user's limits, looked up once per request (raises ``CustomerBlockedError`` for a blocked one)."""
    state = limiter_state(ctx)
    if not state.customer_known:
        customers = state.customers
        if customers is None:
            raise RuntimeError("customer limits are read inside MiddlewareChain.pre_call")
        state.customer = await customers.limits(ctx.key.organization_id, ctx.customer_id, ctx.key.time_zone)
        state.customer_known = True
    return state.customer


async def tenant_scopes(ctx: RequestContext) -> list[ScopeLimits]:
    """Key, user, team, organization and end-user scopes; built once per request (callers must not mutate)."""
    state = limiter_state(ctx)
    scopes = state.scopes
    if scopes is None:
        scopes = list(ctx.key.scopes)
        if ctx.customer_id:
            customer = await customer_scope(ctx)
            if customer is not None:
                scopes.append(customer)
        state.scopes = scopes
    return scopes


def model_scopes(ctx: RequestContext) -> list[ScopeLimits]:
    """Model-per-key and model-per-team limits for the model this request asked for."""
    found = []
    for per_model in (ctx.key.key_model_limits, ctx.key.team_model_limits):
        model_scope = per_model.get(ctx.model)
        if model_scope is not None:
            found.append(model_scope)
    return found


def token_estimate(ctx: RequestContext) -> int:
    """TPM reserves the prompt estimate plus the output cap; post_call reconciles to real usage."""
    return max(0, int(ctx.estimated_prompt_tokens)) + max(0, int(ctx.max_output_tokens))
