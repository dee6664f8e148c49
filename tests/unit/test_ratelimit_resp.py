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
    resp = RespClient(settings.REDIS_URL, stall_seconds=5.0)  # BLPOP below legitimately waits 0.5 s
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


# Health: a stall is silence on the socket, never a busy worker or a quiet spell (issue 13).


async def test_a_burst_after_a_quiet_spell_keeps_the_healthy_connection():
    """The first commands after more than the stall time of quiet get their replies on the same connection.

    On main the client compared the time since the LAST REPLY with its stall limit, so the second
    command of a burst after 2 s of quiet closed a healthy connection and failed every pending command.
    """
    client = RespClient(settings.REDIS_URL, stall_seconds=0.2)
    key = f"gw:test:{uuid.uuid4().hex}"
    first_id = await client.execute("CLIENT", "ID")
    await asyncio.sleep(0.6)
    replies = await asyncio.gather(*(client.execute("INCR", key) for _ in range(50)))
    assert replies == list(range(1, 51))
    assert await client.execute("CLIENT", "ID") == first_id and client.down_reason is None
    await client.execute("DEL", key)
    client.close()


async def test_a_reply_waiting_behind_a_busy_event_loop_is_not_a_stall():
    """The worker's loop blocked for 3x the stall time while Redis had long answered: still a reply."""
    client = RespClient(settings.REDIS_URL, stall_seconds=0.1)
    await client.execute("PING")
    pending = asyncio.ensure_future(client.execute("ECHO", "late but fine"))
    await asyncio.sleep(0)  # the command leaves on the next loop turn ...
    await asyncio.sleep(0)
    import time

    time.sleep(0.3)  # ... and the loop is busy elsewhere, far past the stall time
    assert await pending == b"late but fine"
    assert client.down_reason is None
    client.close()


@pytest.fixture
def own_redis():
    from tests.support.redis_server import RedisServer

    with RedisServer() as server:
        yield server


async def test_a_stopped_redis_opens_the_breaker_and_its_return_closes_it(own_redis):
    """SIGSTOP: the stall is noticed within about the stall time, later commands fail at once, and the
    background probe closes the breaker as soon as Redis runs again (no request needed to notice)."""
    import time

    from apps.ratelimit.backends.resp import RespUnavailable

    client = RespClient(own_redis.url, stall_seconds=0.2)
    assert await client.execute("PING") == b"PONG"
    own_redis.pause()
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(client.execute("PING") for _ in range(16)), return_exceptions=True)
        waited = time.monotonic() - started
        assert all(isinstance(r, RespUnavailable) and r.reason == "stalled" for r in results), results
        assert 0.2 <= waited < 2.0
        started = time.monotonic()
        with pytest.raises(RespUnavailable) as info:
            await client.execute("PING")
        assert info.value.reason == "breaker_open" and time.monotonic() - started < 0.1
    finally:
        own_redis.resume()
    for _ in range(100):
        if client.down_reason is None:
            break
        await asyncio.sleep(0.05)
    assert client.down_reason is None
    assert await client.execute("PING") == b"PONG"
    client.close()


async def test_a_killed_and_restarted_redis_is_used_again_at_once(own_redis):
    """SIGKILL: pending commands fail (connection_lost), connects are refused (breaker open), and once the
    server is back from its AOF the probe reconnects; scripts are reloaded (NOSCRIPT) by themselves."""
    from apps.ratelimit.backends.resp import RespUnavailable

    client = RespClient(own_redis.url, stall_seconds=0.2)
    script = "return redis.call('INCR', KEYS[1])"
    assert await client.evalsha(script, ["gw:restart"], []) == 1
    own_redis.kill()
    with pytest.raises(RespUnavailable) as info:
        await client.evalsha(script, ["gw:restart"], [])
    assert info.value.reason in ("connection_lost", "connect_error")
    with pytest.raises(RespUnavailable):
        await client.execute("PING")
    assert client.down_reason == "connect_error"
    own_redis.start()
    for _ in range(100):
        if client.down_reason is None:
            break
        await asyncio.sleep(0.05)
    assert client.down_reason is None
    assert await client.evalsha(script, ["gw:restart"], []) == 2  # the counter came back from the AOF
    client.close()


def test_a_slow_reply_then_a_blocked_uvloop_is_not_a_stall():
    """The event loop production runs (uvloop): a watchdog tick saw the command pending and unanswered,
    then the loop blocks 3x the stall time while the reply (at 40 ms) arrives. Not a stall: the verdict
    needs two consecutive overdue ticks with a socket poll between them, whatever order a loop runs
    timers and I/O in."""
    import time

    uvloop = pytest.importorskip("uvloop")
    slow = (
        "local t = redis.call('TIME') local s = t[1] * 1e6 + t[2] "
        "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s > 40000 return 'slow'"
    )

    async def scenario():
        client = RespClient(settings.REDIS_URL, stall_seconds=0.1)
        await client.execute("PING")
        await asyncio.sleep(0.06)  # the watchdog stops once nothing is pending: the next command starts it
        pending = asyncio.ensure_future(client.execute("EVAL", slow, 0))
        await asyncio.sleep(0.03)  # one watchdog tick (25 ms) saw the command pending, unanswered ...
        time.sleep(0.3)  # ... then the worker is busy elsewhere while the reply arrives (at 40 ms)
        try:
            return await pending, client.down_reason
        finally:
            client.close()

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(scenario()) == (b"slow", None)
    finally:
        loop.close()
