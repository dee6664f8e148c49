"""The limiter's own pipelined Redis client against the real Redis of the test run."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis
from django.conf import settings

from apps.ratelimit.backends.resp import RespClient, RespError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]


@pytest.fixture
async def client():
    resp = RespClient(settings.REDIS_URL)
    yield resp
    resp.close()


async def test_concurrent_commands_get_their_own_replies(client):
    key = f"gw:test:{uuid.uuid4().hex}"
    replies = await asyncio.gather(*(client.execute("INCR", key) for _ in range(300)))
    assert replies == list(range(1, 301))  # FIFO: every caller got the reply to its own command
    await client.execute("DEL", key)


async def test_an_error_reply_raises_and_the_connection_keeps_working(client):
    with pytest.raises(RespError, match="unknown command"):
        await client.execute("NOT-A-COMMAND")
    assert await client.execute("PING") == b"PONG"


async def test_a_caller_that_timed_out_does_not_steal_the_next_reply(client):
    key = f"gw:test:{uuid.uuid4().hex}"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await client.execute("BLPOP", key, "0.5")
    # The late BLPOP reply (nil) is dropped; these get their own answers.
    assert await client.execute("ECHO", "mine") == b"mine"
    assert await client.execute("PING") == b"PONG"


async def test_scripts_are_loaded_when_redis_does_not_know_them(client):
    script = f"return '{uuid.uuid4().hex}'"
    first = await client.evalsha(script, [], [])
    await client.execute("SCRIPT", "FLUSH")
    assert await client.evalsha(script, [], []) == first


async def test_a_killed_connection_is_reopened(client):
    connection_id = await client.execute("CLIENT", "ID")
    admin = redis.Redis.from_url(settings.REDIS_URL)
    assert admin.client_kill_filter(_id=connection_id) == 1
    for _ in range(3):
        try:
            if await client.execute("PING") == b"PONG":
                break
        except RespError:
            continue
    assert await client.execute("PING") == b"PONG"
    admin.close()


async def test_the_database_number_of_the_url_is_selected():
    base = settings.REDIS_URL.rsplit("/", 1)[0]
    client = RespClient(f"{base}/3")
    key = f"gw:test:{uuid.uuid4().hex}"
    await client.execute("SET", key, "x")
    client.close()
    assert redis.Redis.from_url(f"{base}/3").get(key) == b"x"
    assert redis.Redis.from_url(f"{base}/0").get(key) is None
