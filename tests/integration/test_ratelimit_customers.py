"""End-user blocks and limits over real HTTP: uvicorn with 2 workers, real Redis and Postgres, mock upstream.

An admin change goes through the real path: the service commits, publishes the invalidation on Redis,
every worker's ``Gateway.invalidate`` marks the limiter snapshots stale and the next request reloads them.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from django.conf import settings

from tests.factories import CustomerFactory, DeploymentFactory, TeamFactory, UserFactory, VirtualKeyFactory
from tests.integration.ratelimit_support import GatewayServer, MockUpstream

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]

DEADLINE_SECONDS = 20.0  # a bound for a stuck test on a loaded machine, not a latency assertion


@pytest.fixture
def tenant(transactional_db):
    with MockUpstream() as upstream:
        team = TeamFactory(name="Endusers")
        CustomerFactory(organization=team.organization, external_id="already-banned", blocked=True)
        DeploymentFactory(model_name="rl-endusers", provider="openai", model="ok", api_base=upstream.url)
        key = VirtualKeyFactory(team=team, alias="app-key")
        yield key, team.organization


def upsert(organization, external_id: str, **values) -> None:
    from django.db import connection

    from apps.teams.audit import Actor
    from apps.teams.services import customer_upsert

    try:
        actor = Actor(UserFactory(is_superuser=True))
        customer_upsert(actor=actor, organization=organization, external_id=external_id, **values)
    finally:
        connection.close()  # runs in a worker thread: don't keep the test database busy at teardown


async def test_blocks_and_new_limits_reach_every_worker_after_the_admin_change(tenant):
    from asgiref.sync import sync_to_async

    key, organization = tenant
    with GatewayServer(workers=2) as gateway:
        url = f"{gateway.url}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {key.secret}"}

        async with aiohttp.ClientSession() as session:

            async def post(user: str) -> tuple[int, dict]:
                body = {"model": "rl-endusers", "messages": [{"role": "user", "content": "ping"}], "user": user}
                async with session.post(url, json=body, headers=headers) as response:
                    return response.status, await response.json(content_type=None)

            async def until(user: str, wanted, streak: int = 10) -> tuple[float, dict]:
                """Requests until ``streak`` answers in a row match (both workers have heard of the change)."""
                started, seen, status, body = time.monotonic(), 0, 0, {}
                while seen < streak:
                    assert time.monotonic() - started < DEADLINE_SECONDS, (user, status, body, gateway.output())
                    status, body = await post(user)
                    seen = seen + 1 if wanted(status, body) else 0
                    if not seen:
                        await asyncio.sleep(0.05)
                return time.monotonic() - started, body

            status, body = await post("already-banned")
            assert status == 403, body
            assert body["error"]["type"] == "permission_error" and body["error"]["code"] == "customer_blocked"
            assert "already-banned" in body["error"]["message"]
            for _ in range(6):  # warm both workers' snapshots with "the end user is not blocked"
                assert (await post("soon-banned"))[0] == 200

            await sync_to_async(upsert)(organization, "soon-banned", blocked=True)
            took, body = await until("soon-banned", lambda status, body: status == 403)
            assert body["error"]["code"] == "customer_blocked", body
            assert (await post("someone-else"))[0] == 200
            print(f"block effective on both workers after {took:.2f} s")

            await sync_to_async(upsert)(organization, "soon-banned", blocked=False)
            await until("soon-banned", lambda status, body: status == 200)

            await sync_to_async(upsert)(organization, "newly-limited", rpm_limit=1)

            def limited(status: int, body: dict) -> bool:
                return status == 429 and body["error"]["scope"] == "customer"

            await until("newly-limited", limited, streak=5)
