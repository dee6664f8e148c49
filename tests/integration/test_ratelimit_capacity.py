"""Deployment and model-group capacity over real HTTP: the limiters read it from what the proxy routed to.

uvicorn with one worker, real Redis and Postgres, the mock upstream. The proxy puts the deployment it
picked and the group the name resolved to on the request context; the capacity limiters read them there
(no second registry of their own), so an admin change reaches them with the proxy's own registry reload.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from django.conf import settings

from tests.factories import DeploymentFactory, TeamFactory, UserFactory, VirtualKeyFactory
from tests.integration.ratelimit_support import GatewayServer, MockUpstream

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]

DEADLINE_SECONDS = 20.0  # a bound for a stuck test on a loaded machine, not a latency assertion
# Overload shedding off: on this shared machine a lagging loop would shed the priority-0 key's requests
# with a 503 before the limiters see them, and these tests are about the limiters' answers.
ENV = {"PROXY_SHED_LOOP_LAG_MS": "0"}


@pytest.fixture
def upstream():
    with MockUpstream() as mock:
        yield mock


def raise_capacity(deployment_id: int, rpm_limit: int) -> None:
    from django.db import connection

    from apps.proxy.models import ModelDeployment
    from apps.proxy.services import deployment_update
    from apps.teams.audit import Actor

    try:
        actor = Actor(UserFactory(is_superuser=True))
        deployment_update(actor=actor, deployment=ModelDeployment.objects.get(pk=deployment_id), rpm_limit=rpm_limit)
    finally:
        connection.close()  # runs in a worker thread: don't keep the test database busy at teardown


async def post(session, url: str, key, model: str) -> tuple[int, dict, dict]:
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}]}
    async with session.post(url, json=body, headers={"Authorization": f"Bearer {key.secret}"}) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


@pytest.mark.django_db(transaction=True)
async def test_a_deployments_capacity_refuses_every_tenant_and_follows_an_admin_change(upstream):
    from asgiref.sync import sync_to_async

    from apps.proxy.models import ModelGroup

    deployment = await sync_to_async(DeploymentFactory)(
        model_name="rl-capacity", provider="openai", model="ok", api_base=upstream.url, rpm_limit=2
    )
    # The group's own capacity is far above: no priority tier (by default the sum of its deployments', 2 RPM,
    # of which priority 1 may fill 90 %) refuses before the deployment's capacity does.
    await sync_to_async(ModelGroup.objects.create)(model_name="rl-capacity", rpm_capacity=1000)
    first = await sync_to_async(VirtualKeyFactory)(team=await sync_to_async(TeamFactory)(name="First"))
    second = await sync_to_async(VirtualKeyFactory)(team=await sync_to_async(TeamFactory)(name="Second"))
    with GatewayServer(workers=1, **ENV) as gateway:
        url = f"{gateway.url}/v1/chat/completions"
        async with aiohttp.ClientSession() as session:
            assert (await post(session, url, first, "rl-capacity"))[0] == 200
            assert (await post(session, url, second, "rl-capacity"))[0] == 200
            status, body, headers = await post(session, url, first, "rl-capacity")
            assert status == 429, (body, gateway.output())
            error = body["error"]
            assert (error["limit_type"], error["scope"]) == ("requests", "model")
            assert "deployment capacity of model 'rl-capacity'" in error["message"]
            assert error["llm_provider"] == "openai" and headers["x-ratelimit-limit-requests"] == "2"

            # The admin raises the deployment's capacity: the proxy's registry reload carries it to the limiter.
            await sync_to_async(raise_capacity)(deployment.pk, 4)
            started, admitted = time.monotonic(), 0
            while admitted < 2:
                assert time.monotonic() - started < DEADLINE_SECONDS, gateway.output()
                status, body, _ = await post(session, url, second, "rl-capacity")
                if status == 200:
                    admitted += 1
                else:
                    assert status == 429 and body["error"]["scope"] == "model", body
                    await asyncio.sleep(0.05)
            status, body, headers = await post(session, url, second, "rl-capacity")
            assert status == 429 and headers["x-ratelimit-limit-requests"] == "4", body


@pytest.mark.django_db(transaction=True)
async def test_a_saturated_groups_capacity_refuses_low_priority_first(upstream):
    from asgiref.sync import sync_to_async

    from apps.proxy.models import ModelGroup

    # No capacity on the deployments: the group's own (a ModelGroup row) is what the priority tiers share.
    await sync_to_async(DeploymentFactory)(model_name="rl-tiered", provider="openai", model="ok", api_base=upstream.url)
    await sync_to_async(ModelGroup.objects.create)(model_name="rl-tiered", rpm_capacity=10)
    team = await sync_to_async(TeamFactory)(name="Tiers")
    low = await sync_to_async(VirtualKeyFactory)(team=team, priority=0)
    high = await sync_to_async(VirtualKeyFactory)(team=team, priority=100)
    with GatewayServer(workers=1, **ENV) as gateway:
        url = f"{gateway.url}/v1/chat/completions"
        async with aiohttp.ClientSession() as session:
            # Threshold 0.8: priority 0 may fill 8 of the group's 10 requests a minute, priority 100 nine.
            for _ in range(8):
                status, body, _ = await post(session, url, low, "rl-tiered")
                assert status == 200, (body, gateway.output())
            status, body, _ = await post(session, url, low, "rl-tiered")
            assert status == 429 and body["error"]["scope"] == "model", body
            assert "saturated" in body["error"]["message"] and "priority 0" in body["error"]["message"]
            assert (await post(session, url, high, "rl-tiered"))[0] == 200
            assert (await post(session, url, high, "rl-tiered"))[0] == 429
