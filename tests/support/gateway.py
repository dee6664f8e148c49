"""Fixtures for the proxy's end-to-end tests: the mock upstream, a real uvicorn gateway, tenants.

The gateway runs as ``uvicorn gateway_project.asgi:application`` in a subprocess against the test
Postgres and Redis (from scripts/test.sh); tests use ``transaction=True`` so the rows they create are
visible to it. After creating deployments a test waits until the gateway lists them (the registry
reloads on the Redis invalidation message).

Import the fixtures into a test module with ``from tests.support.gateway import *  # noqa: F403``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import aiohttp
import orjson
import pytest
import redis
from django.conf import settings
from django.test import Client

from apps.common.invalidation import publish_invalidation
from apps.proxy.models import ModelDeployment
from tests.factories import MembershipFactory, OrganizationFactory, TeamFactory, UserFactory, VirtualKeyFactory
from tests.support.mock_upstream import MockUpstream
from tests.support.processes import ServerProcess, child_env, free_port, uvicorn_command

MASTER_KEY = "sk-master-e2e-0123456789abcdef"

__all__ = ["MASTER_KEY", "deploy", "gateway", "http", "make_key", "spend_event", "tenant", "upstream"]
# (helpers not in __all__: deploy_priced_model, unique_name — import them by name)


class GatewayServer(ServerProcess):
    """``uvicorn gateway_project.asgi:application`` with the proxy-test environment, on a free port."""

    def __init__(self, workers: int = 1, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.v1 = self.url + "/v1"
        self.workers = workers
        fd, log_path = tempfile.mkstemp(prefix="gw-proxy-", suffix=".log")
        os.close(fd)
        super().__init__(
            uvicorn_command(self.port, workers),
            env=child_env(
                **{
                    "GATEWAY_MASTER_KEY": MASTER_KEY,
                    "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="gw-proxy-prom-"),
                    "PROXY_MAX_BODY_BYTES": str(64 * 1024),
                    "PROXY_NUM_RETRIES": "2",
                    "RATELIMIT_REDIS_TIMEOUT_MS": "3000",
                    **env,  # a test's own values win
                }
            ),
            ready_url=self.url + "/health/live",
            log_path=log_path,
            tail=6000,
        )

    def models(self, key: str = MASTER_KEY) -> set[str]:
        request = urllib.request.Request(self.v1 + "/models", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return {m["id"] for m in orjson.loads(response.read())["data"]}

    def wait_for_models(self, names: set[str], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if names <= self.models():
                return
            time.sleep(0.1)
        raise AssertionError(f"gateway never listed {names}: {self.output()}")


@pytest.fixture(scope="session")
def upstream():
    with MockUpstream() as server:
        yield server


@pytest.fixture(scope="session")
def gateway(django_db_setup, django_db_blocker, upstream):
    with django_db_blocker.unblock(), GatewayServer() as server:
        yield server


def deploy(gateway: GatewayServer, *specs: dict, wait: bool = True) -> list[ModelDeployment]:
    """Create deployments, tell every worker, and wait until the gateway serves their model names."""
    created = []
    for spec in specs:
        spec = dict(spec)
        api_key = spec.pop("api_key", "sk-upstream-secret")
        deployment = ModelDeployment(**spec)
        deployment.set_credentials(api_key)
        deployment.save()
        created.append(deployment)
    publish_invalidation("test deployments")
    if wait:
        gateway.wait_for_models({d.model_name for d in created})
    return created


def unique_name(prefix: str = "gpt") -> str:
    """A model name no other test uses (the gateway process is shared by the whole session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def deploy_priced_model(gateway: GatewayServer, upstream) -> str:
    """An OpenAI deployment on the mock upstream at 1e-6 / 2e-6 USD per input / output token; its name."""
    name = unique_name()
    deploy(
        gateway,
        {
            "model_name": name,
            "provider": "openai",
            "model": "gpt-up",
            "api_base": upstream.url,
            "input_cost_per_token": "0.000001",
            "output_cost_per_token": "0.000002",
        },
    )
    return name


def make_key(team, user=None, **values):
    return VirtualKeyFactory(team=team, user=user, **values)


@pytest.fixture
def tenant(transactional_db):
    """Acme / Alpha with alice (member) and her key; Globex / Omega with charlie and his key."""
    acme = OrganizationFactory(name="Acme")
    alpha = TeamFactory(organization=acme, name="Alpha")
    alice = UserFactory(username="alice")
    MembershipFactory(user=alice, team=alpha, organization=acme, role="member")
    globex = OrganizationFactory(name="Globex")
    omega = TeamFactory(organization=globex, name="Omega")
    charlie = UserFactory(username="charlie")
    MembershipFactory(user=charlie, team=omega, organization=globex, role="admin")

    class Cast:
        pass

    cast = Cast()
    cast.acme, cast.alpha, cast.alice = acme, alpha, alice
    cast.globex, cast.omega, cast.charlie = globex, omega, charlie
    cast.alice_key = make_key(alpha, alice, alias="alice-key")
    cast.charlie_key = make_key(omega, charlie, alias="charlie-key")
    return cast


class RawResponse:
    def __init__(self, status: int, headers, body: bytes) -> None:
        self.status_code = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.content = body

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return orjson.loads(self.content)


def http(
    method: str, url: str, *, json=None, content: bytes | None = None, headers: dict | None = None, timeout: float = 30
) -> RawResponse:
    """A plain HTTP call without SDK niceties (for malformed bodies and exact status checks)."""
    headers = dict(headers or {})
    if json is not None:
        content = orjson.dumps(json)
        headers.setdefault("content-type", "application/json")
    request = urllib.request.Request(url, data=content, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return RawResponse(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return RawResponse(error.code, error.headers, error.read())


def spend_event(request_id: str, timeout: float = 5.0) -> dict:
    client = redis.Redis.from_url(settings.REDIS_URL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _id, fields in client.xrevrange("gateway:spend", count=500):
            event = orjson.loads(fields[b"e"])
            if event["request_id"] == request_id:
                return event
        time.sleep(0.1)
    raise AssertionError(f"no spend event for {request_id}")


def operator_session_cookie(username: str = "operator") -> str:
    """The session cookie of a superuser logged in to the admin (the session row is in the shared database)."""
    client = Client()
    client.force_login(UserFactory(username=username, is_staff=True, is_superuser=True))
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def live_feed_sees(
    gateways: list[GatewayServer], cookie: str, secret: str, model: str
) -> tuple[set[str], set[str]]:
    """Open the admin's live feed on the first gateway, send one request to each: (ids sent, ids the feed showed)."""
    feed = gateways[0].url.replace("http://", "ws://") + "/ws/admin/live/"
    headers = {"Origin": gateways[0].url, "Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.ws_connect(feed, headers=headers) as socket:
        assert (await socket.receive_json(timeout=10))["type"] == "hello"
        sent: set[str] = set()
        for gateway in gateways:
            body = {"model": model, "messages": [{"role": "user", "content": "live"}]}
            async with session.post(
                gateway.v1 + "/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}
            ) as response:
                assert response.status == 200
                sent.add(response.headers["x-request-id"])
        seen: set[str] = set()
        deadline = time.monotonic() + 15
        while not sent <= seen and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                message = orjson.loads((await socket.receive(timeout=1)).data)
                if message.get("type") == "rows":
                    seen |= {row["request_id"] for row in message["rows"]}
        return sent, seen
