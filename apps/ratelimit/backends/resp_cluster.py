"""The limiter's pipelined client for a Redis Cluster: one ``RespClient`` per master, routed by slot.

Why not redis-py's ``RedisCluster``: the same reason ``resp.py`` exists (docs/ratelimit.md: its asyncio
client takes a pooled connection per in-flight command and costs several times the round trip); here
every request of the worker bound for one master shares that master's one pipelined socket.

Routing: a command goes to the master that serves its first key's slot (CRC16 of the hash tag, the
``{...}`` part of the key). The slot map comes from ``CLUSTER SLOTS`` of any node that answers (the
configured seed nodes first, then every master seen). Redirects are followed: ``MOVED`` (the slot has
a new owner: a failover, a resharding) updates the map, schedules a full refresh and retries on the
new owner; ``ASK`` (a slot being migrated) sends ``ASKING`` and the command, as one pipelined pair,
to the node named. At most ``MAX_REDIRECTS`` per call.

Health stays per connection (``RespClient``: stall watchdog, breaker, probe): a master that stops
answering fails only the requests for its slots, with the reason of the fail mode, and makes the
client read the slot map again (at most every ``REFRESH_MIN_SECONDS``), so once the cluster has
promoted its replica the requests go there. ``CLUSTERDOWN`` and ``TRYAGAIN`` are error replies: the
fail mode for that call, no retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import quote

from redis.crc import key_slot

from apps.ratelimit.backends.resp import RespClient, RespError, RespUnavailable

log = logging.getLogger(__name__)

SLOTS = 16384
MAX_REDIRECTS = 5
REFRESH_MIN_SECONDS = 0.2


def slot_of(key: str | bytes) -> int:
    """The cluster slot of ``key`` (only the hash tag counts when the key has one)."""
    return key_slot(key.encode() if isinstance(key, str) else key)


class RespCluster:
    """``execute``/``evalsha`` as ``RespClient`` has them, for a cluster given by some of its nodes.

    ``nodes``: ``[(host, port), ...]`` (any subset; the rest is discovered). ``username``/``password``
    and ``tls`` apply to every node.
    """

    def __init__(
        self,
        nodes: list[tuple[str, int]],
        *,
        stall_seconds: float = 0.5,
        username: str = "",
        password: str = "",
        tls: bool = False,
    ) -> None:
        if not nodes:
            raise ValueError("a cluster needs at least one node")
        self.seeds = list(nodes)
        self.stall_seconds = stall_seconds
        self._credentials = (username, password)
        self._scheme = "rediss" if tls else "redis"
        self._clients: dict[tuple[str, int], RespClient] = {}
        self._owners: list[tuple[str, int] | None] = [None] * SLOTS
        self._refreshing: asyncio.Future | None = None
        self._refreshed_at = 0.0
        self.refreshes = 0  # slot map reads (for the tests and the bench)

    # --- the slot map --------------------------------------------------------------------------
    def client(self, address: tuple[str, int]) -> RespClient:
        client = self._clients.get(address)
        if client is None:
            username, password = self._credentials
            auth = f"{quote(username, safe='')}:{quote(password, safe='')}@" if password else ""
            url = f"{self._scheme}://{auth}{address[0]}:{address[1]}/0"
            client = self._clients[address] = RespClient(url, stall_seconds=self.stall_seconds)
        return client

    async def refresh(self, *, force: bool = False) -> None:
        """Read the slot map (once at a time; callers during a read wait for it)."""
        if self._refreshing is None:
            if not force and time.monotonic() - self._refreshed_at < REFRESH_MIN_SECONDS:
                return
            self._refreshing = asyncio.ensure_future(self._read_slots())
        refreshing = self._refreshing
        try:
            await asyncio.shield(refreshing)
        finally:
            if refreshing.done() and self._refreshing is refreshing:
                self._refreshing = None

    def _refresh_soon(self) -> None:
        """A background read of the slot map (a node failed or redirected us); never raises."""
        if self._refreshing is not None or time.monotonic() - self._refreshed_at < REFRESH_MIN_SECONDS:
            return
        task = asyncio.ensure_future(self.refresh())
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _read_slots(self) -> None:
        known = {address for address in self._owners if address is not None}
        candidates = list(dict.fromkeys([*self.seeds, *sorted(known)]))
        last: Exception | None = None
        for address in candidates:
            try:
                reply = await self.client(address).execute("CLUSTER", "SLOTS")
            except RespError as exc:
                last = exc
                continue
            owners: list[tuple[str, int] | None] = [None] * SLOTS
            for start, end, master, *_replicas in reply:
                host = master[0].decode() if master[0] else address[0]
                owner = (host, int(master[1]))
                owners[int(start) : int(end) + 1] = [owner] * (int(end) - int(start) + 1)
            self._owners = owners
            self._refreshed_at = time.monotonic()
            self.refreshes += 1
            self._forget_lost_nodes(set(owners))
            return
        self._refreshed_at = time.monotonic()
        raise RespUnavailable("connect_error", f"no cluster node answered CLUSTER SLOTS ({last})")

    def _forget_lost_nodes(self, owners: set[tuple[str, int] | None]) -> None:
        """A node that serves no slot any more and does not answer (a dead master its replica replaced):
        close its client, whose breaker probe would otherwise reconnect every 0.1 s for good."""
        for address, client in list(self._clients.items()):
            if address not in owners and client.down_reason is not None:
                client.close()
                del self._clients[address]

    async def _owner(self, slot: int) -> tuple[str, int]:
        owner = self._owners[slot]
        if owner is None:
            await self.refresh(force=self._refreshed_at == 0.0)
            owner = self._owners[slot]
            if owner is None:
                raise RespError(f"CLUSTERDOWN Hash slot {slot} not served")
        return owner

    # --- commands ------------------------------------------------------------------------------
    async def _routed(self, slot: int, call, asking_call) -> Any:
        address = await self._owner(slot)
        asking = False
        for _ in range(MAX_REDIRECTS):
            client = self.client(address)
            try:
                return await (asking_call(client) if asking else call(client))
            except RespUnavailable:
                self._refresh_soon()  # the node may have failed over: find its successor for later calls
                raise
            except RespError as exc:
                text = str(exc)
                kind, _, rest = text.partition(" ")
                if kind not in ("MOVED", "ASK"):
                    raise
                target = rest.split()[1]
                host, _, port = target.rpartition(":")
                address = (host or address[0], int(port))
                asking = kind == "ASK"
                if not asking:
                    self._owners[slot] = address
                    self._refresh_soon()
        raise RespError(f"too many redirects for slot {slot}")

    async def execute_on(self, key: str, *args: Any) -> Any:
        """A command on the master of ``key``'s slot."""

        async def asking(client: RespClient) -> Any:
            return await client.execute_asking(*args)

        return await self._routed(slot_of(key), lambda client: client.execute(*args), asking)

    async def evalsha(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """A script on the master of its keys' slot (every key of one call must share it)."""

        async def asking(client: RespClient) -> Any:
            # Mid-migration the target may not know the script yet: send it whole.
            return await client.execute_asking("EVAL", script, len(keys), *keys, *args)

        return await self._routed(slot_of(keys[0]), lambda client: client.evalsha(script, keys, args), asking)

    def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            self._refreshing = None
        for client in self._clients.values():
            client.close()
        self._clients.clear()
