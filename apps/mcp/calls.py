"""``tools/list`` and ``tools/call`` for one authenticated key.

A tool call is a request of the key like any other: it passes the whole limiter chain (the key's, user's,
team's and organization's RPM, parallel requests and budgets, with the server's per-call price as its
cost) plus its grants' own tool-call limits (``limits.py``), all reserved in one atomic step; it lands in
the ledger (route ``/mcp``, model ``<server>__<tool>``, no tokens), in the metrics and in a trace span
(``execute_tool``). Forbidden and unknown tools get the same answer and never reach an upstream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from mcp.shared.exceptions import MCPError

from apps.mcp import metrics
from apps.mcp.catalog import Access, CatalogCache, split_tool_name
from apps.mcp.jsonrpc import FORBIDDEN, INTERNAL_ERROR, INVALID_PARAMS, RATE_LIMITED, UPSTREAM_ERROR, RpcError
from apps.mcp.limits import add_tool_call_checks
from apps.mcp.models import TOOL_SEPARATOR
from apps.mcp.upstream import UpstreamError, UpstreamPool
from apps.proxy.calls import spend_event
from apps.proxy.context import CallResult, KeyContext, RequestContext
from apps.proxy.errors import GatewayError
from apps.ratelimit.errors import ProxyRateLimitError

if TYPE_CHECKING:
    from apps.proxy.app import Gateway

logger = logging.getLogger("apps.mcp")
ROUTE = "/mcp"
PROVIDER = "mcp"  # llm_provider of tool calls: in the ledger, the 429s and the metrics


async def tools_list(catalog: CatalogCache, pool: UpstreamPool, key: KeyContext) -> dict[str, Any]:
    """The union of the allowed tools of the allowed servers; a server that fails is left out (and logged)."""
    access = (await catalog.get(key.organization_id)).access_for(key)
    names = sorted(access)
    listed = await asyncio.gather(*(pool.list_tools(access[n].server) for n in names), return_exceptions=True)
    tools: list[dict[str, Any]] = []
    for name, found in zip(names, listed, strict=True):
        if isinstance(found, BaseException):
            metrics.TOOL_CALLS.labels(name, "list_failed").inc()
            logger.warning("MCP server %r left out of tools/list (%s)", name, type(found).__name__)
            continue
        for tool in found:
            if isinstance(tool.get("name"), str) and access[name].allows(tool["name"]):
                tools.append({**tool, "name": f"{name}{TOOL_SEPARATOR}{tool['name']}"})
    return {"tools": tools}


def _resolve(access: dict[str, Access], name: object) -> tuple[Access, str]:
    parts = split_tool_name(name) if isinstance(name, str) else None
    found = access.get(parts[0]) if parts else None
    if parts is None or found is None or not found.allows(parts[1]):
        # One answer for unknown and forbidden: which tools exist elsewhere is none of this key's business.
        shown = name[:200] if isinstance(name, str) else name
        raise RpcError(INVALID_PARAMS, f"Unknown tool: {shown}")
    return found, parts[1]


async def tools_call(
    gw: Gateway,
    catalog: CatalogCache,
    pool: UpstreamPool,
    key: KeyContext,
    params: dict[str, Any],
    headers: dict[bytes, bytes],
    *,
    request_id: str,
    started: float,
) -> dict[str, Any]:
    access, tool = _resolve((await catalog.get(key.organization_id)).access_for(key), params.get("name"))
    arguments = params.get("arguments")
    if arguments is not None and not isinstance(arguments, dict):
        raise RpcError(INVALID_PARAMS, "'arguments' must be an object.")
    server = access.server
    ctx = RequestContext(request_id=request_id, key=key, route=ROUTE, started_at=started)
    ctx.model, ctx.model_known, ctx.llm_provider = f"{server.name}{TOOL_SEPARATOR}{tool}", True, PROVIDER
    price = server.price_of(tool)
    ctx.estimated_cost = price
    trace = gw.tracing.request("execute_tool", "POST", headers) if gw.tracing is not None else None
    if trace is not None:
        trace.ctx, ctx.trace = ctx, trace
        if trace.recording:
            ctx.trace_id = trace.trace_id_hex
        # The GenAI conventions' tool attributes (the span itself is "execute_tool <server>__<tool>").
        trace.event("gateway.mcp.tool", {"gen_ai.tool.name": tool, "gateway.mcp.server": server.name})
    result = CallResult(status=502, error_type="internal_error", llm_provider=PROVIDER)
    limit_type = outcome = None
    try:
        add_tool_call_checks(ctx, access)
        await gw.chain.pre_call(ctx)
        upstream_started = time.perf_counter()
        answer = await pool.call_tool(server, tool, arguments)
        result = CallResult(status=200, cost=price, llm_provider=PROVIDER)
        result.overhead_ms = (upstream_started - started) * 1000
        outcome = "tool_error" if answer.get("isError") else "ok"
        return answer
    except ProxyRateLimitError as exc:
        exc.tag(llm_provider=PROVIDER, model=ctx.model)
        result = CallResult(status=429, error_type=f"rate_limit:{exc.limit_type}", limit_scope=exc.scope)
        limit_type, outcome = exc.limit_type, "rate_limited"
        error = exc.to_body()["error"]
        error["retry_after"] = exc.retry_after
        raise RpcError(RATE_LIMITED, exc.message, status=429, data=error, headers=exc.headers()) from None
    except GatewayError as exc:  # a blocked end user, the limiter backend down (fail closed): its status
        result, outcome = CallResult(status=exc.status, error_type=exc.kind), "refused"
        code = {403: FORBIDDEN, 429: RATE_LIMITED}.get(exc.status, INTERNAL_ERROR)
        raise RpcError(code, exc.message, status=exc.status, data={"status": exc.status}, headers=exc.headers) from None
    except MCPError as exc:  # the upstream answered with a JSON-RPC error: relayed, and it was served
        result, outcome = CallResult(status=200, cost=price, error_type="upstream_rpc_error"), "tool_error"
        raise RpcError(exc.error.code, exc.error.message, data=exc.error.data) from None
    except (UpstreamError, TimeoutError) as exc:
        result, outcome = CallResult(status=502, error_type="upstream_error"), "upstream_error"
        raise RpcError(UPSTREAM_ERROR, str(exc), data={"status": 502, "server": server.name}) from None
    finally:
        result.llm_provider = PROVIDER
        result.latency_ms = (time.perf_counter() - started) * 1000
        metrics.TOOL_CALLS.labels(server.name, outcome or "error").inc()
        metrics.TOOL_CALL_SECONDS.labels(server.name).observe(result.latency_ms / 1000)
        await gw.finish(ctx, result, pre_called=True, event=spend_event(ctx, result, [], limit_type))
        if trace is not None:
            trace.end()
