"""Each sink's bounded queue in Redis: a list of record JSON, its retry state, and a delivery lease.

Bounded means a full queue refuses the newest records and says how many (the caller counts them as
dropped) instead of growing: one Lua call pushes what fits, atomically with the length check, so many
ingesting workers never overshoot the cap together. Only the holder of a sink's lease (SET NX PX) reads
the head of its queue and trims it after the batch was sent or given up, so two delivering workers
never send one batch twice; enqueuers only append at the tail.

Keys, per sink id: ``gateway:sinks:q:<id>`` (the list), ``gateway:sinks:s:<id>`` (hash: ``attempts``,
``retry_at`` epoch seconds), ``gateway:sinks:lease:<id>``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import redis

PREFIX = "gateway:sinks"

# KEYS[1] the queue; ARGV[1] its capacity; ARGV[2..] records. Returns how many did not fit.
_PUSH_BOUNDED = """
local room = tonumber(ARGV[1]) - redis.call('LLEN', KEYS[1])
local n = #ARGV - 1
local take = math.min(math.max(room, 0), n)
if take > 0 then redis.call('RPUSH', KEYS[1], unpack(ARGV, 2, take + 1)) end
return n - take
"""

# KEYS[1] the lease; ARGV[1] its holder's token. Deletes the lease only if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Records per Lua call: unpack() has a stack limit of a few thousand values.
_PUSH_CHUNK = 1000


def queue_key(sink_id: int) -> str:
    return f"{PREFIX}:q:{sink_id}"


def state_key(sink_id: int) -> str:
    return f"{PREFIX}:s:{sink_id}"


def lease_key(sink_id: int) -> str:
    return f"{PREFIX}:lease:{sink_id}"


@dataclass(frozen=True, slots=True)
class RetryState:
    attempts: int
    retry_at: float


class SinkQueues:
    """The queue operations on one Redis client; scripts are registered once per instance."""

    def __init__(self, client: redis.Redis, *, capacity: int) -> None:
        self.client = client
        self.capacity = capacity
        self._push = client.register_script(_PUSH_BOUNDED)
        self._release = client.register_script(_RELEASE)

    def push(self, batches: dict[int, list[bytes]]) -> dict[int, int]:
        """Append each sink's records (one pipelined round trip); returns the records dropped per sink."""
        if not batches:
            return {}
        pipe = self.client.pipeline(transaction=False)
        order: list[int] = []
        for sink_id, records in batches.items():
            for start in range(0, len(records), _PUSH_CHUNK):
                self._push(
                    keys=[queue_key(sink_id)], args=[self.capacity, *records[start : start + _PUSH_CHUNK]], client=pipe
                )
                order.append(sink_id)
        dropped: dict[int, int] = {}
        for sink_id, count in zip(order, pipe.execute(), strict=True):
            if count:
                dropped[sink_id] = dropped.get(sink_id, 0) + int(count)
        return dropped

    def length(self, sink_id: int) -> int:
        return int(self.client.llen(queue_key(sink_id)))

    def lease(self, sink_id: int, seconds: float) -> str | None:
        """The sink's delivery lease for ``seconds``, or None when another worker holds it."""
        token = secrets.token_hex(8)
        if self.client.set(lease_key(sink_id), token, nx=True, px=max(1, int(seconds * 1000))):
            return token
        return None

    def release(self, sink_id: int, token: str) -> None:
        self._release(keys=[lease_key(sink_id)], args=[token])

    def retry_state(self, sink_id: int) -> RetryState:
        raw = self.client.hmget(state_key(sink_id), "attempts", "retry_at")
        return RetryState(int(raw[0] or 0), float(raw[1] or 0.0))

    def head(self, sink_id: int, count: int) -> list[bytes]:
        return self.client.lrange(queue_key(sink_id), 0, count - 1)

    def done(self, sink_id: int, count: int) -> None:
        """The first ``count`` records left (sent, or given up): trim them and forget the retry state."""
        pipe = self.client.pipeline(transaction=False)
        pipe.ltrim(queue_key(sink_id), count, -1)
        pipe.delete(state_key(sink_id))
        pipe.execute()

    def failed(self, sink_id: int, *, attempts: int, retry_in: float) -> None:
        self.client.hset(state_key(sink_id), mapping={"attempts": attempts, "retry_at": time.time() + retry_in})

    def forget(self, sink_id: int) -> None:
        """A deleted or disabled sink: its queue and state go (what was queued is not sent)."""
        self.client.delete(queue_key(sink_id), state_key(sink_id))
