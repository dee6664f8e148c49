"""A tool call's own limits, added to the request's limiter plan before the chain reserves it.

Each grant the call passes (its team's, and the key's own if any) may set tool calls per minute and
parallel tool calls; they are counted per grant holder and server, in the same atomic reservation as the
key's general limits (RPM, parallel requests, budgets), so a refusal consumes nothing anywhere and is the
one ``ProxyRateLimitError`` every limiter raises.
"""

from __future__ import annotations

from django.conf import settings

from apps.mcp.catalog import Access
from apps.proxy.context import RequestContext
from apps.ratelimit.plan import SLOTS, WINDOW, Check, counter_key
from apps.ratelimit.state import plan_for


def add_tool_call_checks(ctx: RequestContext, access: Access) -> None:
    plan = plan_for(ctx)
    # The organization's cluster hash tag: the chain's own tenant counters share it (one script, one slot).
    tag = f"o:{ctx.key.organization_id or '-'}"
    for grant in access.grants:
        label = f"MCP tool calls of {grant.scope} {grant.holder_id} on server '{access.server.name}'"
        base = (grant.scope, grant.holder_id, "srv", access.server.id)
        if grant.tool_calls_per_minute is not None:
            plan.add(
                Check(WINDOW, counter_key(tag, "mcp-rpm", *base), grant.tool_calls_per_minute, 1, "requests",
                      grant.scope, label)
            )  # fmt: skip
        if grant.max_parallel_tool_calls is not None:
            plan.add(
                Check(SLOTS, counter_key(tag, "mcp-par", *base), grant.max_parallel_tool_calls, 1,
                      "concurrent_requests", grant.scope, label,
                      ttl_ms=int(settings.RATELIMIT_SLOT_TTL_SECONDS * 1000), member=ctx.request_id, reconcile="slot")
            )  # fmt: skip
