"""Cooldowns shared through Redis: between routers on a loop, and between two real gateway processes.

The end-to-end test starts two gateways (separate uvicorn processes, as on two machines) on the same
Postgres and Redis, fails a deployment through the first until it cools down, and checks that the
second stops sending to it without ever having seen a failure itself, and that both use it again
once the cooldown is over.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
import redis
from django.conf import settings
from django.urls import reverse

from apps.proxy.cooldown_sync import CHANNEL, CooldownMessage, cooldown_key, shared_cooldowns_left
from apps.proxy.errors import UpstreamError
from apps.proxy.providers import build_adapters
from apps.proxy.registry import Deployment
from apps.proxy.router import Router
from tests.factories import DeploymentFactory
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import GatewayServer, deploy, http

pytestmark = [pytest.mark.integration]


@pytest.fixture(autouse=True)
def _needs_redis():
    if not settings.REDIS_URL:
        pytest.skip("needs the Redis started by scripts/test.sh")


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()


def unused_deployment_id() -> int:
    """An id no database row has, so these cooldowns never touch another test's deployments."""
    return 2_000_000_000 + int.from_bytes(os.urandom(3), "big")


def dep(id: int) -> Deployment:
    return Deployment(id=id, model_name="m", provider="openai", model="up")


async def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def listening_router(redis_url: str | None = None) -> Router:
    """A router built on the loop (as the gateway's startup does), once its listener has connected."""
    router = Router(adapters=build_adapters(), num_retries=1, timeout_seconds=5, redis=redis_url)
    await wait_until(lambda: router.cooldown_sync.connects >= 1)
    return router


def cooling(router: Router, deployment_id: int) -> float:
    health = router.health.get(deployment_id)
    return health.cooldown_until - time.monotonic() if health else 0.0


async def test_a_cooldown_reaches_other_workers_is_stored_and_read_by_late_joiners(redis_client):
    first, second = await listening_router(), await listening_router()
    joiner = None
    dep_id = unused_deployment_id()
    try:
        first._failed(dep(dep_id), UpstreamError(429, "slow", retryable=True, retry_after=30))
        await wait_until(lambda: cooling(second, dep_id) > 0)
        assert 25 < cooling(second, dep_id) <= 30
        assert second.health[dep_id].cooldown_reason == "shared: 429 retry-after"
        assert 25_000 < redis_client.pttl(cooldown_key(dep_id)) <= 30_000
        stored = CooldownMessage.decode(redis_client.get(cooldown_key(dep_id)))
        assert stored.deployment_id == dep_id and stored.worker == first.cooldown_sync.worker_id
        assert first.cooldown_sync.published == 1
        assert not first.health[dep_id].cooldown_reason.startswith("shared")  # its own echo ignored

        joiner = await listening_router()  # started after the message was sent: reads the stored key
        assert 25 < cooling(joiner, dep_id) <= 30
        assert 25 < shared_cooldowns_left(settings.REDIS_URL, [dep_id, dep_id + 1])[dep_id] <= 30

        # A shorter cooldown announced later shortens neither the stored one nor the workers' ones.
        # (Other tests' gateways share this Redis channel: progress is judged by our own ids, never by
        # counts. Messages on one channel arrive in order, so once the marker is applied, so was "short".)
        marker = dep_id + 1
        await first.cooldown_sync._publish(CooldownMessage(dep_id, 3.0, "short", "elsewhere"))
        await first.cooldown_sync._publish(CooldownMessage(marker, 5.0, "marker", "elsewhere"))
        await wait_until(lambda: cooling(second, marker) > 0)
        assert redis_client.pttl(cooldown_key(dep_id)) > 20_000
        assert cooling(second, dep_id) > 20
    finally:
        for router in (first, second, joiner):
            if router is not None:
                await router.close()
        redis_client.delete(cooldown_key(dep_id), cooldown_key(dep_id + 1))


async def test_redis_down_never_fails_the_request_path():
    closed_port = f"redis://127.0.0.1:{_closed_port()}/0"
    router = Router(adapters=build_adapters(), num_retries=1, timeout_seconds=5, redis=closed_port)
    try:
        router._failed(dep(7), UpstreamError(429, "slow", retryable=True, retry_after=30))  # no raise, no wait
        assert cooling(router, 7) > 25  # the local cooldown works as before
        await wait_until(lambda: router.cooldown_sync.publish_failures == 1)
        assert router.cooldown_sync.published == 0
    finally:
        await router.close()


def _closed_port() -> int:
    from tests.support.processes import free_port

    return free_port()


async def test_foreign_and_malformed_messages_on_the_channel_are_ignored(redis_client):
    router = await listening_router()
    dep_id = unused_deployment_id()
    try:
        redis_client.publish(CHANNEL, b"garbage")
        redis_client.publish(CHANNEL, CooldownMessage(dep_id, 20.0, "from a peer", "peer").encode())
        await wait_until(lambda: cooling(router, dep_id) > 0)
        assert 15 < cooling(router, dep_id) <= 20
        assert router.cooldown_sync.connects == 1  # the garbage before it did not break the listener
    finally:
        await router.close()
        redis_client.delete(cooldown_key(dep_id))


@pytest.mark.django_db
def test_admin_page_shows_the_shared_cooldown_without_local_router_state(
    client, alice, acme, monkeypatch, redis_client
):
    from apps.console import deployment_health

    deployment = DeploymentFactory(organization=acme, model_name=f"acme-{uuid.uuid4().hex[:6]}")
    monkeypatch.setattr(deployment_health, "_router_health", lambda: None)  # no proxy traffic in this process
    payload = CooldownMessage(deployment.pk, 40.0, "3 failures", "another-machine").encode()
    redis_client.set(cooldown_key(deployment.pk), payload, px=40_000)
    try:
        client.force_login(alice)
        html = client.get(reverse("gateway-deployment-group", args=[deployment.model_name])).content.decode()
    finally:
        redis_client.delete(cooldown_key(deployment.pk))
    assert "gw-health-cooldown" in html and "s left" in html
    assert "Cooldowns are shared by every proxy worker" in html


# --- two real gateway processes -----------------------------------------------------------------

COOLDOWN_SECONDS = 6


def chat(gateway: GatewayServer, key: str, model: str):
    return http(
        "POST",
        gateway.v1 + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hello"}]},
    )


def failing_hits(upstream) -> int:
    return sum(1 for r in upstream.requests if r["body"].get("model") == "fail-500")


def served_by(response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-gateway-deployment"]


@pytest.mark.django_db(transaction=True)
def test_a_cooldown_seen_by_one_gateway_steers_the_other(upstream, tenant, redis_client):
    name = f"m-{uuid.uuid4().hex[:8]}"
    with GatewayServer() as one, GatewayServer() as two:
        bad, good = deploy(
            one,
            {
                "model_name": name,
                "provider": "openai",
                "model": "fail-500",
                "api_base": upstream.url,
                "priority": 0,  # always tried first unless cooling down
                "extra": {"cooldown_failures": 2, "cooldown_seconds": COOLDOWN_SECONDS},
            },
            {"model_name": name, "provider": "openai", "model": "ok-model", "api_base": upstream.url, "priority": 1},
        )
        two.wait_for_models({name})
        good_label = f"{good.pk}:openai/ok-model"
        key = tenant.alice_key.secret

        # Gateway one: each request fails on `bad`, then is served by `good`; the second failure cools `bad`.
        for _ in range(10):
            before = failing_hits(upstream)
            assert served_by(chat(one, key, name)) == good_label
            if failing_hits(upstream) == before:
                break
        else:
            raise AssertionError("gateway one never cooled the failing deployment down")
        deadline = time.monotonic() + 5
        while redis_client.pttl(cooldown_key(bad.pk)) <= 0:
            assert time.monotonic() < deadline, "the cooldown was never stored in Redis"
            time.sleep(0.01)
        # The same Lua call published it before storing it returned; give gateway two's loop a moment to read it.
        time.sleep(0.2)

        # Gateway two never saw `bad` fail, yet does not call it while the cooldown lasts.
        before = failing_hits(upstream)
        for _ in range(5):
            assert served_by(chat(two, key, name)) == good_label
        assert failing_hits(upstream) == before, "gateway two called the deployment gateway one cooled down"

        # Once the cooldown is over, both gateways try `bad` (priority 0) again.
        for gateway in (two, one):
            before = failing_hits(upstream)
            deadline = time.monotonic() + COOLDOWN_SECONDS + 10
            while failing_hits(upstream) == before:
                assert time.monotonic() < deadline, f"gateway {gateway.port} never used the deployment again"
                assert served_by(chat(gateway, key, name)) == good_label
                time.sleep(0.1)
    redis_client.delete(cooldown_key(bad.pk))
