"""A flood of random keys from one address never delays a new key from another (real gateway, real database).

The flood comes from 127.0.0.2, the newcomer from 127.0.0.1 (both loopback, two sources to the gateway).
"""

from __future__ import annotations

import asyncio
import urllib.request
import uuid

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import GatewayServer, deploy, make_key, unique_name

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
BURST = 10


def lookups(gateway) -> dict[str, float]:
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gateway_auth_lookups_total":
                found[sample.labels["outcome"]] = found.get(sample.labels["outcome"], 0) + sample.value
    return found


@pytest.fixture
def guarded_gateway(django_db_blocker):
    # A slow refill, so the test's own duration adds no tokens worth counting.
    with django_db_blocker.unblock(), GatewayServer(AUTH_MISS_BURST=str(BURST), AUTH_MISS_RATE_PER_SECOND="0.01") as gw:
        yield gw


@pytest.fixture
def newcomer(tenant):
    return make_key(tenant.alpha, tenant.alice, alias="first-time-key")


async def test_a_flood_from_one_source_is_refused_without_lookups_while_a_new_key_works(
    guarded_gateway, upstream, newcomer
):
    model = unique_name()
    spec = {"model_name": model, "provider": "openai", "model": "gpt-up", "api_base": upstream.url}
    await asyncio.to_thread(deploy, guarded_gateway, spec)
    url = guarded_gateway.v1 + "/chat/completions"
    body = {"model": model, "messages": [{"role": "user", "content": "ping"}]}

    async def one(session, key):
        async with session.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as response:
            return response.status, response.headers.copy(), await response.json(content_type=None)

    flood_connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=50)
    async with aiohttp.ClientSession(connector=flood_connector) as flooder, aiohttp.ClientSession() as office:
        flood = [asyncio.create_task(one(flooder, f"sk-gw-{uuid.uuid4().hex}")) for _ in range(300)]
        await asyncio.sleep(0.2)
        status, _, answer = await one(office, newcomer.secret)  # while the flood is on
        flooded = await asyncio.gather(*flood)

    assert status == 200, answer
    statuses = [s for s, _, _ in flooded]
    assert statuses.count(401) == BURST and statuses.count(429) == 300 - BURST, statuses
    _, headers, refusal = next(f for f in flooded if f[0] == 429)
    assert refusal["error"]["scope"] == "client" and refusal["error"]["type"] == "rate_limit_error"
    assert int(headers["retry-after"]) >= 1
    # The database saw the burst and the newcomer, nothing else of the flood.
    seen = lookups(guarded_gateway)
    assert seen.get("unknown") == BURST and seen.get("source_limited") == 300 - BURST, seen
    assert seen.get("found", 0) >= 1, seen
