"""Streams cut short (issue 13, item 3): a client that walks away and an upstream that resets the connection.

Real uvicorn workers, a real upstream over TCP (``drip`` streams a chunk every 100 ms for 30 s;
``reset-stream`` sends a few chunks and then a TCP RST), a real Celery worker filling the ledger. For each:
the request is billed for what was relayed (a ledger row with the tokens sent so far, its status and
error type) and the key's only parallel slot (``max_parallel_requests=1``) is free for the next request
at once.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import aiohttp
import pytest
import redis
from django.conf import settings

from apps.spend.models import SpendLog
from apps.spend.outbox import STREAM_KEY
from apps.spend.schedules import schedules_setup
from tests.factories import DeploymentFactory, TeamFactory, VirtualKeyFactory
from tests.integration.spend_processes import CeleryWorker, Gateway, wait_until
from tests.support.mock_upstream import MockUpstream

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]

PRICES = {"input_cost_per_token": "0.000001", "output_cost_per_token": "0.000002"}


@pytest.fixture
def upstream():
    with MockUpstream() as server:
        yield server


@pytest.fixture
def key(transactional_db, upstream):
    schedules_setup()
    redis.Redis.from_url(settings.REDIS_URL).delete(STREAM_KEY)
    for name, model in (("cut-drip", "drip"), ("cut-reset", "reset-stream"), ("cut-ok", "ok")):
        DeploymentFactory(model_name=name, provider="openai", model=model, api_base=upstream.url, **PRICES)
    return VirtualKeyFactory(team=TeamFactory(name="Streams"), alias="one-slot", max_parallel_requests=1)


def chat(model: str, *, stream: bool = False) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "one two three four"}], "stream": stream}


async def next_request_seconds(session, url: str, headers: dict) -> tuple[float, int]:
    """How long until the key's next (non-streamed) request is admitted, and its final status."""
    started = time.monotonic()
    status = 0
    while time.monotonic() - started < 10:
        async with session.post(f"{url}/v1/chat/completions", json=chat("cut-ok"), headers=headers) as response:
            status = response.status
            body = await response.json(content_type=None)
        if status != 429 or body["error"]["limit_type"] != "concurrent_requests":
            break
        await asyncio.sleep(0.05)
    return time.monotonic() - started, status


async def cut_streams(gateway_url: str, secret: str) -> dict:
    """Both cuts, one after the other, on the key's single slot; what the client saw of each."""
    headers = {"Authorization": f"Bearer {secret}"}
    url = f"{gateway_url}/v1/chat/completions"
    seen: dict = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        # 1. The client walks away after a few chunks of a 30 s stream.
        response = await session.post(url, json=chat("cut-drip", stream=True), headers=headers)
        assert response.status == 200
        seen["disconnect_id"] = response.headers["x-request-id"]
        events = 0
        while events < 6:
            events += (await response.content.readline()).startswith(b"data:")
        async with session.post(url, json=chat("cut-ok"), headers=headers) as held:
            seen["held"] = (held.status, await held.json())  # the stream holds the key's only slot
        response.close()
        seen["after_disconnect"] = await next_request_seconds(session, gateway_url, headers)

        # 2. The upstream resets the connection after a few chunks.
        async with session.post(url, json=chat("cut-reset", stream=True), headers=headers) as response:
            assert response.status == 200
            seen["reset_id"] = response.headers["x-request-id"]
            seen["relayed"] = await response.read()
        seen["after_reset"] = await next_request_seconds(session, gateway_url, headers)
    return seen


def test_client_disconnect_and_upstream_reset_mid_stream_bill_what_was_sent_and_free_the_slot(key, tmp_path):
    worker = CeleryWorker(tmp_path)
    with Gateway(tmp_path, workers=2, PROXY_NUM_RETRIES="0") as gateway:
        worker.start()
        try:
            seen = asyncio.run(cut_streams(gateway.url, key.secret))
            ids = {seen["disconnect_id"], seen["reset_id"]}
            wait_until(lambda: SpendLog.objects.filter(request_id__in=ids).count() == 2, timeout=60,
                       message="the cut streams are not in the ledger", worker=worker)  # fmt: skip
        finally:
            worker.stop()

    (after_disconnect, status_disconnect), (after_reset, status_reset) = seen["after_disconnect"], seen["after_reset"]
    print(
        f"\nslot free {after_disconnect * 1000:.0f} ms after the client disconnected, "
        f"{after_reset * 1000:.0f} ms after the upstream reset"
    )
    held_status, held_body = seen["held"]
    assert held_status == 429 and held_body["error"]["limit_type"] == "concurrent_requests", held_body
    assert (status_disconnect, status_reset) == (200, 200)
    assert after_disconnect < 5 and after_reset < 5  # not after a lease expiry (20 s) or the slot TTL

    cut = SpendLog.objects.get(request_id=seen["disconnect_id"])
    assert (cut.status, cut.error_type) == (499, "client_disconnect")
    assert cut.completion_tokens > 0 and cut.prompt_tokens > 0
    assert cut.cost == Decimal("0.000001") * cut.prompt_tokens + Decimal("0.000002") * cut.completion_tokens

    reset = SpendLog.objects.get(request_id=seen["reset_id"])
    assert b"echo:" in seen["relayed"] and b'"error"' in seen["relayed"]  # relayed, then an error event
    assert (reset.status, reset.error_type) == (502, "upstream_connection")
    assert reset.completion_tokens > 0 and reset.cost > 0
