"""The request body reader: complete bodies untimed, stalled bodies a 408, oversized ones a 413."""

from __future__ import annotations

import asyncio

import pytest

from apps.proxy.asgi_io import read_body
from apps.proxy.errors import GatewayError


def receiver(*messages: dict, then_stall: bool = False):
    queue = list(messages)

    async def receive() -> dict:
        if queue:
            return queue.pop(0)
        if then_stall:
            await asyncio.sleep(3600)  # a client that declared more and went quiet
        return {"type": "http.disconnect"}

    return receive


def test_a_body_that_stops_arriving_is_a_408_not_a_request_held_forever():
    receive = receiver({"type": "http.request", "body": b'{"mod', "more_body": True}, then_stall=True)

    async def read() -> bytes:
        return await read_body(receive, {b"content-length": b"1000"}, 10_000, idle_timeout=0.05)

    with pytest.raises(GatewayError) as stalled:
        asyncio.run(asyncio.wait_for(read(), timeout=10))
    assert stalled.value.status == 408
    assert stalled.value.headers == {"connection": "close"}


def test_slow_bodies_that_keep_arriving_and_whole_bodies_are_read():
    parts = [{"type": "http.request", "body": b"ab", "more_body": True} for _ in range(3)]
    parts.append({"type": "http.request", "body": b"c", "more_body": False})
    assert asyncio.run(read_body(receiver(*parts), {}, 100, idle_timeout=0.5)) == b"abababc"
    whole = receiver({"type": "http.request", "body": b"{}", "more_body": False})
    assert asyncio.run(read_body(whole, {}, 100, idle_timeout=0.001)) == b"{}"


def test_chunked_bodies_over_the_limit_are_a_413():
    parts = [{"type": "http.request", "body": b"x" * 60, "more_body": True} for _ in range(2)]
    with pytest.raises(GatewayError) as refused:
        asyncio.run(read_body(receiver(*parts), {}, 100, idle_timeout=1))
    assert refused.value.status == 413
