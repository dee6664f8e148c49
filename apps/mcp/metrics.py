"""Prometheus series of the MCP gateway (beside the chain's request series, which count tool calls on
route ``/mcp`` with model ``<server>__<tool>``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TOOL_CALLS = Counter(
    "gateway_mcp_tool_calls",
    "MCP tool calls through /mcp, by server and outcome (ok, tool_error, refused, rate_limited, upstream_error).",
    ["server", "outcome"],
)
TOOL_CALL_SECONDS = Histogram(
    "gateway_mcp_tool_call_seconds",
    "Time from a tools/call arriving to its answer, upstream included.",
    ["server"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
