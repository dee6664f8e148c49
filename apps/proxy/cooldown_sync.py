"""Shares deployment cooldowns between the gateway's workers and machines through Redis.

The router's health is per worker process. Without this, a deployment that fails (or answers 429 with
``Retry-After``) is cooled down only by the worker that saw it, and every other worker keeps sending
to it until it learns on its own. With Redis configured, the worker that starts a cooldown announces
it once: one Lua call (fire and forget, an asyncio task off the request) stores
``gateway:cooldown:<deployment id>`` with a TTL of the cooldown (kept if a longer one is already
there) and publishes the same payload on ``gateway:cooldown``. Every worker listens (one background
task, reconnecting with backoff) and applies what others announce to its own health: the later of
the local and the remote end. At every (re)connect the listener reads the stored keys once, so a
worker that starts or reconnects later still honours cooldowns already running.

The payload carries the seconds left, not an epoch time: the receiver adds them to its own monotonic
clock, so clock skew between machines does not matter (transit time, about a millisecond, does); the
stored key's remaining PTTL gives the same for a late reader. Announcing is rate-limited per
deployment: once when a cooldown starts, again only if a failure extends it by more than a second,
and never for a cooldown this worker learned from another one. Nothing here is on the per-request
path; without Redis none of it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from apps.common.intervallog import IntervalLog
from apps.common.redis_target import RedisTarget, redis_target
from apps.proxy.cache_sync import cancel_and_wait, listen_forever

logger = logging.getLogger(__name__)

CHANNEL = "gateway:cooldown"
KEY_PREFIX = "gateway:cooldown:"
MIN_EXTENSION_SECONDS = 1.0
MAX_PENDING_PUBLISHES = 64  # Redis hanging: drop announcements rather than pile up tasks
MAX_REASON_CHARS = 80

# Store the cooldown unless a longer one is stored already, and publish it; one round trip.
ANNOUNCE_SCRIPT = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return redis.call('PUBLISH', ARGV[3], ARGV[1])
"""


def cooldown_key(deployment_id: int) -> str:
    return f"{KEY_PREFIX}{deployment_id}"


@dataclass(frozen=True, slots=True)
class CooldownMessage:
    deployment_id: int
    seconds: float  # left when sent
    reason: str
    worker: str

    def encode(self) -> bytes:
        reason = self.reason[:MAX_REASON_CHARS]
        return orjson.dumps({"d": self.deployment_id, "s": round(self.seconds, 3), "r": reason, "w": self.worker})

    @classmethod
    def decode(cls, raw: bytes | str) -> CooldownMessage | None:
        """The message, or None for anything malformed (a stray publisher must not break the listener)."""
        try:
            data = orjson.loads(raw)
            deployment_id, seconds = data["d"], float(data["s"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        if not isinstance(deployment_id, int) or isinstance(deployment_id, bool) or not seconds > 0:
            return None
        return cls(deployment_id, seconds, str(data.get("r") or "")[:MAX_REASON_CHARS], str(data.get("w") or ""))


# apply(deployment_id, seconds_left, reason) -> the deployment's cooldown end on this worker's monotonic clock
ApplyCooldown = Callable[[int, float, str], float]


class CooldownSync:
    """One per router: announces this worker's cooldowns and applies the other workers' ones."""

    def __init__(self, *, redis: RedisTarget | str | None, apply: ApplyCooldown) -> None:
        self.redis = redis_target(redis)
        self.apply = apply
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self._announced: dict[int, float] = {}  # deployment id -> monotonic end last announced or applied
        self._pending: set[asyncio.Task] = set()
        self._listener: asyncio.Task | None = None
        self._client = None
        self._script = None
        self.published = 0
        self.publish_failures = 0
        self.applied = 0
        self.connects = 0  # listener (re)connections that read the stored cooldowns
        self._failures = IntervalLog(logger, interval=10.0)  # Redis down: one line per interval, not per cooldown

    def start(self) -> None:
        """Start listening (on the running loop); a no-op without Redis or when already listening."""
        if self.redis is not None and self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(
                listen_forever(
                    redis=self.redis,
                    channels=(CHANNEL,),
                    on_message=self.receive,
                    on_connect=self.load_active,
                    name="cooldown sync",
                )
            )

    async def stop(self) -> None:
        await cancel_and_wait([*self._pending, *([self._listener] if self._listener else [])])
        self._listener = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = self._script = None

    # --- this worker's cooldowns -> everyone -----------------------------------------------------
    def announce(self, deployment_id: int, until: float, reason: str) -> None:
        """A deployment's cooldown started or grew here (``until`` on the monotonic clock). Never blocks."""
        now = time.monotonic()
        announced = self._announced.get(deployment_id, 0.0)
        if announced > now and until <= announced + MIN_EXTENSION_SECONDS:
            return  # already told everyone about (nearly) this cooldown
        if self.redis is None or len(self._pending) >= MAX_PENDING_PUBLISHES:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._announced[deployment_id] = until
        message = CooldownMessage(deployment_id, until - now, reason, self.worker_id)
        task = loop.create_task(self._publish(message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, message: CooldownMessage) -> None:
        try:
            if self._script is None:
                self._client = self.redis.async_client(socket_timeout=1.0, socket_connect_timeout=1.0)
                self._script = self._client.register_script(ANNOUNCE_SCRIPT)
            ttl_ms = max(1, int(message.seconds * 1000))
            await self._script(keys=[cooldown_key(message.deployment_id)], args=[message.encode(), ttl_ms, CHANNEL])
            self.published += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the request already moved on; the other workers learn on their own
            self.publish_failures += 1
            self._failures.event(
                f"announce:{type(exc).__name__}",
                f"cooldown sync: announcing deployment {message.deployment_id} failed ({type(exc).__name__})",
            )

    # --- everyone's cooldowns -> this worker -----------------------------------------------------
    def receive(self, raw: bytes | str) -> None:
        """A message from the channel: apply it unless it is malformed or this worker's own."""
        message = CooldownMessage.decode(raw)
        if message is None or message.worker == self.worker_id:
            return
        self._apply(message.deployment_id, message.seconds, message.reason)

    async def load_active(self, client) -> None:
        """At (re)connect: apply every cooldown still stored (the key's PTTL is what is left)."""
        keys = [key async for key in client.scan_iter(match=KEY_PREFIX + "*", count=1000)]
        if keys:
            await self._apply_stored(client, keys)
        self.connects += 1

    async def _apply_stored(self, client, keys: list) -> None:
        async with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
                pipe.pttl(key)
            replies = await pipe.execute()
        for raw, ttl_ms in zip(replies[::2], replies[1::2], strict=True):
            message = CooldownMessage.decode(raw) if raw else None
            if message is not None and isinstance(ttl_ms, int) and ttl_ms > 0:
                self._apply(message.deployment_id, ttl_ms / 1000, message.reason)

    def _apply(self, deployment_id: int, seconds: float, reason: str) -> None:
        until = self.apply(deployment_id, seconds, reason)
        self.applied += 1
        # Learned, not seen: failures here during this cooldown must not announce it again.
        self._announced[deployment_id] = max(self._announced.get(deployment_id, 0.0), until)


def shared_cooldowns_left(redis: RedisTarget | str, deployment_ids: list[int]) -> dict[int, float]:
    """Seconds left of each deployment's shared cooldown (only those cooling), read synchronously.

    For the admin's health page, which may be served by a process whose router saw no traffic.
    """
    if not deployment_ids:
        return {}
    client = redis_target(redis).client(socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        with client.pipeline(transaction=False) as pipe:
            for deployment_id in deployment_ids:
                pipe.pttl(cooldown_key(deployment_id))
            replies = pipe.execute()
    finally:
        client.close()
    return {pk: round(ms / 1000, 1) for pk, ms in zip(deployment_ids, replies, strict=True) if ms > 0}
