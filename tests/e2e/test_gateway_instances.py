"""Three gateway instances, as three machines would run them, behind a round-robin client.

Each instance is its own uvicorn master (its own port, process group, caches and router) on the same
Postgres and Redis, nothing else shared. What a client and an operator observe:

- a key's rpm limit is exact across the three, under concurrent requests spread round-robin;
- a key revoked through the API of one instance is refused by all three within 2 s, although each had
  it in its auth cache;
- a deployment cooled down by failures seen on one instance is not called by the other two;
- the admin's live feed, opened on one instance, shows the requests served by all three.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid

import aiohttp
import pytest
from django.conf import settings

from tests.factories import DeploymentFactory, TeamFactory, VirtualKeyFactory
from tests.support.gateway import MASTER_KEY, GatewayServer, http, live_feed_sees, operator_session_cookie
from tests.support.mock_upstream import MockUpstream

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]

RPM = 12
COOLDOWN_SECONDS = 30


def chat(gateway: GatewayServer, secret: str, model: str):
    return http(
        "POST",
        gateway.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": model, "messages": [{"role": "user", "content": "hello"}]},
    )


def failing_hits(upstream: MockUpstream) -> int:
    return sum(1 for r in upstream.requests if r["body"].get("model") == "fail-500")


async def round_robin(gateways: list[GatewayServer], secret: str, model: str, count: int) -> list[int]:
    """``count`` concurrent requests, the n-th to instance n % 3."""
    targets = itertools.islice(itertools.cycle(gateways), count)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(gateway: GatewayServer) -> int:
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            headers = {"Authorization": f"Bearer {secret}"}
            async with session.post(gateway.v1 + "/chat/completions", json=body, headers=headers) as response:
                await response.read()
                return response.status

        return list(await asyncio.gather(*(one(g) for g in targets)))


def test_three_instances_share_limits_revocation_cooldowns_and_the_live_feed(transactional_db):
    model, cool = f"inst-{uuid.uuid4().hex[:6]}", f"cool-{uuid.uuid4().hex[:6]}"
    team = TeamFactory(name="Instances")
    limited = VirtualKeyFactory(team=team, alias="limited", rpm_limit=RPM)
    victim = VirtualKeyFactory(team=team, alias="victim")
    watcher = VirtualKeyFactory(team=team, alias="watched")
    cookie = operator_session_cookie()

    with MockUpstream() as upstream, contextlib.ExitStack() as stack:
        DeploymentFactory(model_name=model, provider="openai", model="ok", api_base=upstream.url)
        bad = DeploymentFactory(
            model_name=cool, provider="openai", model="fail-500", api_base=upstream.url, priority=0,
            extra={"cooldown_failures": 2, "cooldown_seconds": COOLDOWN_SECONDS},
        )  # fmt: skip
        good = DeploymentFactory(
            model_name=cool, provider="openai", model="ok-model", api_base=upstream.url, priority=1
        )
        gateways = [
            stack.enter_context(GatewayServer(workers=1, PROXY_SHED_LOOP_LAG_MS="0", PROXY_NUM_RETRIES="2"))
            for _ in range(3)
        ]
        for gateway in gateways:
            gateway.wait_for_models({model, cool})

        # Limits: RPM + 6 concurrent requests over three instances, exactly RPM admitted.
        statuses = asyncio.run(round_robin(gateways, limited.secret, model, RPM + 6))
        assert sorted(statuses) == [200] * RPM + [429] * 6, statuses

        # Revocation: every instance has the key cached, one instance's API revokes it, all refuse it in 2 s.
        for gateway in gateways:
            assert chat(gateway, victim.secret, model).status_code == 200
        revoke = http(
            "POST", f"{gateways[1].url}/api/v1/keys/{victim.pk}/revoke/",
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
        )  # fmt: skip
        assert revoke.status_code == 200, revoke.text
        revoked_at = time.monotonic()
        refused_after: dict[int, float] = {}
        while len(refused_after) < 3 and time.monotonic() - revoked_at < 10:
            for index, gateway in enumerate(gateways):
                if index not in refused_after and chat(gateway, victim.secret, model).status_code == 401:
                    refused_after[index] = time.monotonic() - revoked_at
            time.sleep(0.05)
        assert len(refused_after) == 3 and max(refused_after.values()) < 2.0, refused_after
        print("revoked key refused after (s, per instance):", {i: round(t, 3) for i, t in refused_after.items()})

        # Cooldowns: instance 0 sees `bad` fail until it cools down; instances 1 and 2 never call it.
        label = f"{good.pk}:openai/ok-model"
        for _ in range(10):
            before = failing_hits(upstream)
            response = chat(gateways[0], watcher.secret, cool)
            assert response.status_code == 200 and response.headers["x-gateway-deployment"] == label
            if failing_hits(upstream) == before:
                break
        else:
            raise AssertionError("instance 0 never cooled the failing deployment down")
        time.sleep(0.5)  # the announcement is a pub/sub message: give the other instances' loops a moment
        before = failing_hits(upstream)
        for gateway in gateways[1:]:
            for _ in range(3):
                response = chat(gateway, watcher.secret, cool)
                assert response.status_code == 200 and response.headers["x-gateway-deployment"] == label
        assert failing_hits(upstream) == before, f"another instance called deployment {bad.pk} while it cooled down"

        # The live feed on instance 0 shows requests served by all three.
        sent, seen = asyncio.run(live_feed_sees(gateways, cookie, watcher.secret, model))
        assert sent <= seen, (sent - seen, [g.output()[-1500:] for g in gateways])
