"""/mcp on a two-worker gateway: a session opened on one worker is good on the other (session ids are
signed, not stored), a grant's tool-call limit is one count across both (Redis), and a grant taken away
is gone from the next tools/list on every worker (the cache invalidation)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
from django.conf import settings
from mcp.shared.exceptions import MCPError

from apps.mcp import services
from apps.mcp.jsonrpc import RATE_LIMITED
from apps.teams.audit import Actor
from tests.factories import UserFactory
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import GatewayServer
from tests.support.mcp_server import McpUpstream, mcp_session

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]


@pytest.fixture(scope="module")
def two_workers(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock(), GatewayServer(workers=2, PROXY_SHED_LOOP_LAG_MS="0") as server:
        yield server


@pytest.fixture
def root(transactional_db):
    return Actor(user=UserFactory(username="root", is_superuser=True, is_staff=True), source="test")


@pytest.fixture(scope="module")
def mcp_upstream():
    with McpUpstream("tools") as server:
        yield server


def test_sessions_limits_and_revoked_grants_hold_across_workers(two_workers, tenant, root, mcp_upstream):
    server = services.mcp_server_create(
        actor=root, organization=tenant.acme, name="tools", url=mcp_upstream.url, price_per_call=Decimal("0.01")
    )
    grant = services.mcp_grant_create(
        actor=root, server=server, team=tenant.alpha, tools=["echo"], tool_calls_per_minute=5
    )

    async def calls_until_refused():
        outcomes = []
        # Several sessions and new connections: the kernel spreads them over both workers.
        for round_ in range(4):
            async with mcp_session(two_workers, tenant.alice_key.secret) as session:
                for i in range(2):
                    try:
                        await session.call_tool("tools__echo", {"text": f"{round_}.{i}"})
                        outcomes.append("ok")
                    except MCPError as exc:
                        outcomes.append(exc.error.code)
        return outcomes

    outcomes = asyncio.run(asyncio.wait_for(calls_until_refused(), 120))
    assert outcomes.count("ok") == 5 and outcomes.count(RATE_LIMITED) == 3, outcomes

    services.mcp_grant_delete(actor=root, grant=grant)

    async def listed_after_revocation() -> list[list[str]]:
        deadline = time.monotonic() + 10
        while True:
            names = []
            for _ in range(4):  # new connections: both workers must have dropped it
                async with mcp_session(two_workers, tenant.alice_key.secret) as session:
                    names.append([t.name for t in (await session.list_tools()).tools])
            if not any(names) or time.monotonic() > deadline:
                return names
            await asyncio.sleep(0.3)

    assert asyncio.run(asyncio.wait_for(listed_after_revocation(), 120)) == [[], [], [], []]
