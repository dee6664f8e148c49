"""Requests the limiter chain guards: the one 429 every refusal becomes, and a single upstream call
run under the chain (``pre_call``, the call, then ``post_call`` and one spend event whatever happened)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from apps.proxy.asgi_io import encode_headers, send_json
from apps.proxy.calls import ProxyGateway, spend_event
from apps.proxy.context import CallResult, RequestContext
from apps.proxy.errors import GatewayError
from apps.proxy.registry import Deployment
from apps.ratelimit.errors import ProxyRateLimitError


async def send_rate_limited(gw: ProxyGateway, ctx: RequestContext, exc: ProxyRateLimitError, send) -> CallResult:
    """Answer a limiter's refusal: OpenAI error shape, tagged with the request's provider and model,
    ``retry-after`` and the ``x-ratelimit-*`` headers. Returns what the request ended as."""
    exc.tag(llm_provider=ctx.llm_provider, model=ctx.model)
    if ctx.trace is not None:
        ctx.trace.event(
            "gateway.rate_limited",
            {
                "gateway.limit.type": exc.limit_type,
                "gateway.limit.scope": exc.scope,
                "gateway.retry_after": exc.retry_after,
            },
        )
    headers = gw.common_headers(ctx.request_id, ctx.started_at) + encode_headers(ctx.response_headers)
    await send_json(send, 429, exc.to_body(), headers + encode_headers(exc.headers()))
    return CallResult(status=429, error_type=f"rate_limit:{exc.limit_type}", limit_scope=exc.scope)


async def run_limited(
    gw: ProxyGateway, ctx: RequestContext, dep: Deployment, send, call: Callable[[], Awaitable[None]]
) -> None:
    """``call`` (one upstream request that sends its own answer) under the limiter chain.

    ``ctx`` carries the model, deployment and estimates the limiters reserve against. A refusal is the
    429 above; a ``GatewayError`` is answered in the error shape; ``post_call`` and the spend event run
    exactly once either way.
    """
    result = CallResult(status=502, error_type="internal_error")  # what the catch-all answers on a bug
    limit_type = None
    try:
        await gw.chain.pre_call(ctx)
        await call()
        result = CallResult(status=200)
    except ProxyRateLimitError as exc:
        result, limit_type = await send_rate_limited(gw, ctx, exc, send), exc.limit_type
    except GatewayError as exc:
        result = CallResult(status=exc.status, error_type=exc.kind)
        await gw.send_error(send, exc, ctx.request_id, ctx.started_at, ctx, deployment=dep.label)
    finally:
        result.deployment_id, result.llm_provider = dep.id, dep.provider
        result.latency_ms = (time.perf_counter() - ctx.started_at) * 1000
        await gw.finish(ctx, result, pre_called=True, event=spend_event(ctx, result, [], limit_type))
