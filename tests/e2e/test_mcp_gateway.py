"""The MCP gateway end to end: a real MCP server (the SDK's MCPServer, its own process), a real gateway
process, and the SDK's own ClientSession over streamable HTTP pointed at the gateway's /mcp with a
virtual key.

Cast: Acme / Alpha with alice's key; Globex / Omega with charlie's key. Acme registers the upstream as
server "tools" and grants Alpha echo, add and whoami (not secret_dump).
"""

from __future__ import annotations

import asyncio
import sys
import time
from decimal import Decimal

import orjson
import pytest
import redis
from django.conf import settings
from mcp.shared.exceptions import MCPError

from apps.keys.services import key_revoke
from apps.mcp import services
from apps.mcp.jsonrpc import INVALID_PARAMS, RATE_LIMITED, UNAUTHORIZED, UPSTREAM_ERROR
from apps.teams.audit import Actor
from tests.factories import UserFactory
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import GatewayServer, http
from tests.support.mcp_server import McpUpstream, mcp_session, stdio_args
from tests.support.processes import free_port

pytestmark = pytest.mark.e2e
UPSTREAM_SECRET = "Bearer upstream-secret-7f3a9c"


@pytest.fixture(scope="module")
def gateway(django_db_setup, django_db_blocker):
    """This module's own gateway with overload shedding off: under a loaded machine the shared one may shed a
    call (503) that these tests expect to reach the limiter or the upstream."""
    with django_db_blocker.unblock(), GatewayServer(PROXY_SHED_LOOP_LAG_MS="0") as server:
        yield server


@pytest.fixture(scope="module")
def mcp_upstream():
    with McpUpstream("tools") as server:
        yield server


@pytest.fixture
def root(transactional_db):
    return Actor(user=UserFactory(username="root", is_superuser=True, is_staff=True), source="test")


def register(root, org, url, team, *, price="0.01", **grant):
    server = services.mcp_server_create(
        actor=root, organization=org, name="tools", url=url, headers={"Authorization": UPSTREAM_SECRET},
        price_per_call=Decimal(price),
    )  # fmt: skip
    grant.setdefault("tools", ["echo", "add", "whoami"])
    services.mcp_grant_create(actor=root, server=server, team=team, **grant)
    return server


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def ledger_rows(key_id: int, model: str, timeout: float = 10.0, count: int = 1) -> list[dict]:
    """The spend events of ``key_id`` for ``model`` (the SDK client does not show the request ids)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    deadline = time.monotonic() + timeout
    found: list[dict] = []
    while time.monotonic() < deadline:
        found = [
            event
            for _id, fields in client.xrevrange("gateway:spend", count=2000)
            if (event := orjson.loads(fields[b"e"]))["key_id"] == key_id and event["model"] == model
        ]
        if len(found) >= count:
            return found
        time.sleep(0.1)
    return found


def test_alice_lists_her_allowed_tools_namespaced_and_calls_one(gateway, tenant, root, mcp_upstream):
    register(root, tenant.acme, mcp_upstream.url, tenant.alpha)

    async def scenario():
        async with mcp_session(gateway, tenant.alice_key.secret) as session:
            listed = await session.list_tools()
            added = await session.call_tool("tools__add", {"a": 2, "b": 3})
            who = await session.call_tool("tools__whoami", {})
            return listed, added, who

    listed, added, who = run(scenario())
    assert sorted(t.name for t in listed.tools) == ["tools__add", "tools__echo", "tools__whoami"]
    add_tool = next(t for t in listed.tools if t.name == "tools__add")
    assert add_tool.description == "Add two integers."
    assert set(add_tool.input_schema["properties"]) == {"a", "b"}
    assert not added.is_error and added.structured_content == {"result": 5}
    assert added.content[0].text == "5"
    # The server's stored credential reached the upstream; the caller never sent it.
    assert who.content[0].text == UPSTREAM_SECRET
    rows = ledger_rows(tenant.alice_key.id, "tools__add")
    assert len(rows) == 1
    row = rows[0]
    assert (row["route"], row["status"], row["llm_provider"]) == ("/mcp", 200, "mcp")
    assert Decimal(row["cost"]) == Decimal("0.01")
    assert row["prompt_tokens"] == row["completion_tokens"] == 0
    assert row["team_id"] == tenant.alpha.id and row["organization_id"] == tenant.acme.id
    assert UPSTREAM_SECRET.split()[1] not in gateway.output()
    assert mcp_upstream.url not in gateway.output()  # no log line per upstream request (the SDK's HTTP client)
    metrics = http("GET", gateway.url + "/metrics").text
    assert 'gateway_mcp_tool_calls_total{outcome="ok",server="tools"}' in metrics
    assert UPSTREAM_SECRET.split()[1] not in metrics


def test_a_forbidden_or_unknown_tool_is_refused_and_never_reaches_the_upstream(gateway, tenant, root, mcp_upstream):
    register(root, tenant.acme, mcp_upstream.url, tenant.alpha)
    before = mcp_upstream.calls().get("secret_dump", 0)

    async def scenario():
        errors = []
        async with mcp_session(gateway, tenant.alice_key.secret) as session:
            for name in ("tools__secret_dump", "elsewhere__echo", "secret_dump", "tools__"):
                with pytest.raises(MCPError) as caught:
                    await session.call_tool(name, {})
                errors.append(caught.value.error)
        return errors

    errors = run(scenario())
    assert [e.code for e in errors] == [INVALID_PARAMS] * 4
    assert errors[0].message == "Unknown tool: tools__secret_dump"
    assert mcp_upstream.calls().get("secret_dump", 0) == before


def test_a_revoked_key_is_cut_off_at_its_next_message(gateway, tenant, root, mcp_upstream):
    register(root, tenant.acme, mcp_upstream.url, tenant.alpha)

    async def scenario():
        async with mcp_session(gateway, tenant.alice_key.secret) as session:
            assert (await session.call_tool("tools__echo", {"text": "hi"})).content[0].text == "tools says: hi"
            await asyncio.to_thread(key_revoke, actor=root, key=tenant.alice_key)
            deadline = time.monotonic() + 10
            while True:  # revocation reaches every worker within ~2 s
                try:
                    await session.call_tool("tools__echo", {"text": "again"})
                except MCPError as exc:
                    return exc.error
                assert time.monotonic() < deadline, "the revoked key still worked after 10 s"
                await asyncio.sleep(0.2)

    error = run(scenario())
    assert error.code == UNAUTHORIZED
    raw = http("POST", gateway.url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
               headers={"Authorization": f"Bearer {tenant.alice_key.secret}"})  # fmt: skip
    assert raw.status_code == 401 and raw.json()["error"]["code"] == UNAUTHORIZED


def test_the_grant_tool_call_limit_refuses_the_third_call_per_minute(gateway, tenant, root, mcp_upstream):
    register(root, tenant.acme, mcp_upstream.url, tenant.alpha, tool_calls_per_minute=2)
    before = mcp_upstream.calls().get("add", 0)

    async def scenario():
        async with mcp_session(gateway, tenant.alice_key.secret) as session:
            results = [await session.call_tool("tools__add", {"a": i, "b": 1}) for i in range(2)]
            with pytest.raises(MCPError) as caught:
                await session.call_tool("tools__add", {"a": 9, "b": 9})
            return results, caught.value.error

    results, error = run(scenario())
    assert [r.structured_content["result"] for r in results] == [1, 2]
    assert error.code == RATE_LIMITED
    assert error.data["type"] == "rate_limit_error" and error.data["code"] == "rate_limit_exceeded"
    assert (error.data["limit_type"], error.data["scope"]) == ("requests", "team")
    assert (error.data["llm_provider"], error.data["model"]) == ("mcp", "tools__add")
    assert error.data["retry_after"] >= 1
    assert mcp_upstream.calls().get("add", 0) == before + 2
    refused = [r for r in ledger_rows(tenant.alice_key.id, "tools__add", count=3) if r["status"] == 429]
    assert len(refused) == 1 and Decimal(refused[0]["cost"]) == 0


def test_the_grant_parallel_limit_refuses_a_second_call_while_one_runs_and_frees_its_slot(
    gateway, tenant, root, mcp_upstream
):
    register(root, tenant.acme, mcp_upstream.url, tenant.alpha, tools=["hold", "echo"], max_parallel_tool_calls=1)
    held_before = mcp_upstream.calls().get("hold", 0)

    async def scenario():
        async with mcp_session(gateway, tenant.alice_key.secret) as session:
            first = asyncio.create_task(session.call_tool("tools__hold", {}))
            deadline = time.monotonic() + 30
            while (await asyncio.to_thread(mcp_upstream.calls)).get("hold", 0) == held_before:
                assert time.monotonic() < deadline, "the first call never reached the upstream"
                await asyncio.sleep(0.1)
            with pytest.raises(MCPError) as caught:
                await session.call_tool("tools__echo", {"text": "second"})
            await asyncio.to_thread(mcp_upstream.release)
            held = await first
            after = await session.call_tool("tools__echo", {"text": "third"})
            return caught.value.error, held, after

    error, held, after = run(scenario())
    assert error.code == RATE_LIMITED
    assert (error.data["limit_type"], error.data["scope"]) == ("concurrent_requests", "team")
    assert held.content[0].text == "released"
    assert after.content[0].text == "tools says: third"  # the slot came back when the first call ended


def test_tenants_never_see_each_others_servers(gateway, tenant, root, mcp_upstream):
    register(root, tenant.acme, mcp_upstream.url, tenant.alpha)

    async def scenario():
        async with mcp_session(gateway, tenant.charlie_key.secret) as session:
            listed = await session.list_tools()
            with pytest.raises(MCPError) as caught:
                await session.call_tool("tools__echo", {"text": "x"})
            return listed, caught.value.error

    listed, error = run(scenario())
    assert listed.tools == []
    assert error.code == INVALID_PARAMS


def test_transport_rules_sessions_methods_and_malformed_bodies(gateway, tenant, root, mcp_upstream):
    url, auth = gateway.url + "/mcp", {"Authorization": f"Bearer {tenant.alice_key.secret}"}
    hello = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello}
    opened = http("POST", url, json=init, headers=auth)
    assert opened.status_code == 200 and opened.json()["result"]["protocolVersion"] == "2025-06-18"
    session = opened.headers["mcp-session-id"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    assert http("POST", url, json=listing, headers=auth).status_code == 400  # no session id
    assert http("POST", url, json=listing, headers={**auth, "mcp-session-id": "mcps1.forged"}).status_code == 404
    # Another key presenting alice's session: unknown to it.
    other = {"Authorization": f"Bearer {tenant.charlie_key.secret}", "mcp-session-id": session}
    assert http("POST", url, json=listing, headers=other).status_code == 404
    ok = http("POST", url, json=listing, headers={**auth, "mcp-session-id": session})
    assert ok.status_code == 200 and ok.json() == {"jsonrpc": "2.0", "id": 2, "result": {"tools": []}}
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert http("POST", url, json=note, headers={**auth, "mcp-session-id": session}).status_code == 202
    assert http("POST", url, content=b"{nope", headers=auth).json()["error"]["code"] == -32700
    assert http("POST", url, json=[listing], headers=auth).status_code == 400
    unknown = http("POST", url, json={"jsonrpc": "2.0", "id": 3, "method": "server/discover"}, headers=auth)
    assert unknown.status_code == 200 and unknown.json()["error"]["code"] == -32601
    assert http("GET", url, headers=auth).status_code == 405
    assert http("DELETE", url, headers={**auth, "mcp-session-id": session}).status_code == 405
    assert http("POST", url, json=init, headers={**auth, "Origin": "https://evil.example"}).status_code == 403
    assert http("POST", url, json=init).status_code == 401


def test_a_stdio_server_a_superuser_registered_runs_as_the_gateways_child(gateway, tenant, root):
    server = services.mcp_server_create(
        actor=root, organization=tenant.acme, name="local", transport="stdio", command=sys.executable,
        args=stdio_args("local"), price_per_call=Decimal("0.5"),
    )  # fmt: skip
    services.mcp_grant_create(actor=root, server=server, team=tenant.alpha, tools=["echo"])

    async def scenario():
        async with mcp_session(gateway, tenant.alice_key.secret) as session:
            listed = await session.list_tools()
            return listed, await session.call_tool("local__echo", {"text": "over stdio"})

    listed, echoed = run(scenario())
    assert [t.name for t in listed.tools] == ["local__echo"]
    assert echoed.content[0].text == "local says: over stdio"
    assert Decimal(ledger_rows(tenant.alice_key.id, "local__echo")[0]["cost"]) == Decimal("0.5")


def test_an_sse_server_is_reached_over_the_legacy_transport(gateway, tenant, root):
    with McpUpstream("legacy", transport="sse") as sse_upstream:
        server = services.mcp_server_create(
            actor=root, organization=tenant.acme, name="legacy", transport="sse", url=sse_upstream.url,
            headers={"Authorization": UPSTREAM_SECRET},
        )  # fmt: skip
        services.mcp_grant_create(actor=root, server=server, team=tenant.alpha, all_tools=True)

        async def scenario():
            async with mcp_session(gateway, tenant.alice_key.secret) as session:
                listed = await session.list_tools()
                return listed, await session.call_tool("legacy__whoami", {})

        listed, who = run(scenario())
    assert {t.name for t in listed.tools} == {f"legacy__{n}" for n in ("echo", "add", "secret_dump", "hold", "whoami")}
    assert who.content[0].text == UPSTREAM_SECRET


def test_an_unreachable_server_is_left_out_of_the_list_and_its_calls_are_upstream_errors(
    gateway, tenant, root, mcp_upstream
):
    register(root, tenant.acme, mcp_upstream.url, tenant.alpha)
    dead = services.mcp_server_create(
        actor=root, organization=tenant.acme, name="dead", url=f"http://127.0.0.1:{free_port()}/mcp"
    )
    services.mcp_grant_create(actor=root, server=dead, team=tenant.alpha, all_tools=True)

    async def scenario():
        async with mcp_session(gateway, tenant.alice_key.secret) as session:
            listed = await session.list_tools()
            with pytest.raises(MCPError) as caught:
                await session.call_tool("dead__anything", {})
            return listed, caught.value.error

    listed, error = run(scenario())
    assert sorted(t.name for t in listed.tools) == ["tools__add", "tools__echo", "tools__whoami"]
    assert error.code == UPSTREAM_ERROR and error.data == {"status": 502, "server": "dead"}
    (row,) = ledger_rows(tenant.alice_key.id, "dead__anything")
    assert row["status"] == 502 and Decimal(row["cost"]) == 0


def test_a_restarted_upstream_is_reconnected_without_the_caller_noticing(gateway, tenant, root):
    first = McpUpstream("phoenix")
    with first:
        server = services.mcp_server_create(actor=root, organization=tenant.acme, name="phoenix", url=first.url)
        services.mcp_grant_create(actor=root, server=server, team=tenant.alpha, tools=["echo"])

        async def call(text: str):
            async with mcp_session(gateway, tenant.alice_key.secret) as session:
                return (await session.call_tool("phoenix__echo", {"text": text})).content[0].text

        assert run(call("before")) == "phoenix says: before"
    # The gateway's pooled session now names a session the new process never issued.
    with McpUpstream("phoenix", port=first.port) as second:
        assert run(call("after")) == "phoenix says: after"
        assert second.calls() == {"echo": 1}
