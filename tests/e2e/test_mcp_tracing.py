"""A tool call through /mcp is a trace span: a real gateway exporting to a real OTLP receiver process, the
SDK's client sending the caller's ``traceparent``, the tests' MCP server in its own process."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import httpx2
import pytest
from django.conf import settings
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from apps.mcp import services
from apps.teams.audit import Actor
from tests.e2e.test_proxy_tracing import SERVER, OtlpReceiver, traced_env
from tests.factories import UserFactory
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import GatewayServer
from tests.support.mcp_server import McpUpstream

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]


@pytest.fixture(scope="module")
def receiver():
    with OtlpReceiver() as server:
        yield server


@pytest.fixture(scope="module")
def traced(django_db_setup, django_db_blocker, receiver):
    with django_db_blocker.unblock(), GatewayServer(**traced_env(receiver)) as server:
        yield server


@pytest.fixture(scope="module")
def mcp_upstream():
    with McpUpstream("tools") as server:
        yield server


@contextlib.asynccontextmanager
async def traced_session(gateway, secret: str, trace_id: str):
    headers = {"Authorization": f"Bearer {secret}", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as client,
        streamable_http_client(gateway.url + "/mcp", http_client=client) as streams,
        ClientSession(streams[0], streams[1], read_timeout_seconds=30) as session,
    ):
        await session.initialize()
        yield session


def test_a_tool_call_and_a_refused_one_are_execute_tool_spans_in_the_callers_trace(
    traced, receiver, tenant, mcp_upstream
):
    root = Actor(user=UserFactory(username="root", is_superuser=True), source="test")
    server = services.mcp_server_create(actor=root, organization=tenant.acme, name="tools", url=mcp_upstream.url)
    services.mcp_grant_create(actor=root, server=server, team=tenant.alpha, tools=["add"], tool_calls_per_minute=1)
    trace_id = secrets.token_hex(16)

    async def scenario():
        async with traced_session(traced, tenant.alice_key.secret, trace_id) as session:
            await session.call_tool("tools__add", {"a": 1, "b": 2})
            with pytest.raises(MCPError):
                await session.call_tool("tools__add", {"a": 1, "b": 2})

    asyncio.run(asyncio.wait_for(scenario(), 120))
    spans = receiver.wait_for(lambda s: s["trace_id"] == trace_id and s["kind"] == SERVER, count=2)
    ok, refused = sorted(spans, key=lambda s: s["start_ns"])
    assert ok["name"] == refused["name"] == "execute_tool tools__add"
    assert ok["parent_span_id"] == "00f067aa0ba902b7"
    assert ok["attributes"]["gen_ai.operation.name"] == "execute_tool"
    assert ok["attributes"]["http.route"] == "/mcp"
    assert ok["attributes"]["gateway.team.id"] == tenant.alpha.id
    (tool,) = [e for e in ok["events"] if e["name"] == "gateway.mcp.tool"]
    assert tool["attributes"] == {"gen_ai.tool.name": "add", "gateway.mcp.server": "tools"}
    assert refused["attributes"]["http.response.status_code"] == 429
    assert refused["attributes"]["error.type"] == "rate_limit:requests"
