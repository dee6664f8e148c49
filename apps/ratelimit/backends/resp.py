"""A minimal pipelined Redis client for the limiter's two scripts: one connection per worker, FIFO replies.

Why not redis-py's asyncio client: on this hot path its per-command Python overhead (pool checkout,
command packing, response parsing layers) is several times the loopback round trip itself (see
docs/ratelimit.md for the measured numbers). Here a command is packed by hiredis, written to one shared
connection, and its reply is matched by order; concurrent requests share the socket and are pipelined.

Health, not patience, decides when Redis is "down" (issue 13). A request never times its own wait: a
wall-clock timeout on the request path also counts the time the reply sat unread behind the worker's own
busy event loop, so it fired on a healthy Redis exactly when traffic peaked. Instead:

- a connection is **stalled** when a command has been on the socket for ``stall_seconds`` with no byte
  from Redis since it was written, seen so at ``OVERDUE_TICKS`` consecutive watchdog ticks. Between two
  ticks the event loop polls the socket at least once (asyncio and uvloop alike), so a reply that had
  arrived is read before the second verdict: a busy loop delays the verdict, it never causes it;
- a connect that is refused, fails or takes longer than ``connect_seconds``, and a stall, open the
  **breaker**: commands then fail at once (``breaker_open``) while one background probe per client
  reconnects and PINGs every ``PROBE_INTERVAL_SECONDS``; the first answer closes it again;
- a connection that breaks (reset, EOF, Redis restarted) fails only the commands it had pending; the
  next command reconnects at once, so limits resume as soon as Redis accepts connections.

With Redis Sentinel (a ``RedisTarget`` with sentinels) every connect, reconnect and probe first asks the
sentinels for the master's address (``SENTINEL get-master-addr-by-name``, the last one that answered
first) and then checks ``ROLE`` on the connection: a server that is not the master (a sentinel's stale
view during a failover) is a ``connect_error``, so the breaker's probe keeps asking until the new master
answers. A ``-READONLY`` reply (the master was demoted under an open connection) drops the connection,
so the next command reconnects to whoever the master is now.

Every failure is a ``RespUnavailable`` carrying a bounded ``reason`` for the metrics. Replies arrive
strictly in command order, so a caller that gave up leaves its future in the queue and the late reply
is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import ssl
import time
from typing import Any

import hiredis
from redis.connection import SSLConnection, parse_url

from apps.common.redis_target import RedisTarget, redis_target

log = logging.getLogger(__name__)

# The stall verdict needs this many consecutive watchdog ticks that find the socket overdue (see above).
OVERDUE_TICKS = 2
PROBE_INTERVAL_SECONDS = 0.1


class RespError(Exception):
    """Redis answered with an error reply (the connection itself is fine)."""


class RespUnavailable(RespError):
    """No answer from Redis: ``reason`` is one of connect_error, connection_lost, stalled, breaker_open."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class _Protocol(asyncio.Protocol):
    def __init__(self, stall_seconds: float, on_stall) -> None:
        self.reader = hiredis.Reader()
        self.pending: collections.deque[asyncio.Future] = collections.deque()
        # When each pending command left for the socket; None while it waits for this loop turn's write.
        self.written_at: collections.deque[float | None] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.last_byte = time.monotonic()
        self.outgoing: list[bytes] = []
        self.flush_scheduled = False
        self.stall_seconds = stall_seconds
        self.tick_seconds = max(stall_seconds / 4, 0.005)
        self.on_stall = on_stall
        self._watching = False
        self._overdue_ticks = 0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        self.last_byte = time.monotonic()
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self._fail(RespUnavailable("connection_lost", f"protocol error: {exc}"))
                if self.transport is not None:
                    self.transport.abort()
                return
            if reply is False:
                return
            future = self.pending.popleft()
            self.written_at.popleft()
            if future.done():  # its caller gave up; the reply is dropped
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(RespError(str(reply)))
                if "READONLY" in str(reply):  # a demoted master: reconnect (and re-resolve) on the next command
                    self.closed = True
                    if self.transport is not None:
                        self.transport.abort()
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(RespUnavailable("connection_lost", str(exc or "closed by the server")))

    def _fail(self, error: Exception) -> None:
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(error)
        self.written_at.clear()

    def send(self, args: tuple) -> asyncio.Future:
        """Queue a command; commands issued in the same loop turn leave in one write (one syscall)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self.closed:
            future.set_exception(RespUnavailable("connection_lost", "connection closed"))
            return future
        self.pending.append(future)
        self.written_at.append(None)
        self.outgoing.append(hiredis.pack_command(args))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            loop.call_soon(self._flush)
        if not self._watching:
            self._watching = True
            self._overdue_ticks = 0
            loop.call_later(self.tick_seconds, self._tick)
        return future

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.transport is not None and not self.transport.is_closing() and self.outgoing:
            self.transport.write(b"".join(self.outgoing))
            now = time.monotonic()
            written = self.written_at
            for index in range(len(written) - len(self.outgoing), len(written)):
                written[index] = now
        self.outgoing.clear()

    def _tick(self) -> None:
        """The watchdog: runs only while commands are pending, off the request path."""
        if self.closed or not self.pending:
            self._watching = False
            return
        oldest = self.written_at[0]
        # Silence on the socket: since the oldest pending command was written, or since the last byte.
        waited = 0.0 if oldest is None else time.monotonic() - max(oldest, self.last_byte)
        self._overdue_ticks = self._overdue_ticks + 1 if waited >= self.stall_seconds else 0
        if self._overdue_ticks >= OVERDUE_TICKS:
            self._watching = False
            self.stalled(waited)
            return
        asyncio.get_running_loop().call_later(self.tick_seconds, self._tick)

    def stalled(self, waited: float) -> None:
        count = len(self.pending)
        self._fail(RespUnavailable("stalled", f"no reply for {waited:.2f} s"))
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self.on_stall(waited, count)


class RespClient:
    """Executes commands and Lua scripts on one lazily opened connection, with a breaker (see module doc).

    ``target``: a ``RedisTarget`` (or a URL); ``stall_seconds``: how long a command may wait on the socket
    with no byte from Redis; ``connect_seconds``: the bound on opening a connection (default: the same),
    sentinel questions included.
    """

    def __init__(
        self, target: RedisTarget | str, *, stall_seconds: float = 0.5, connect_seconds: float | None = None
    ) -> None:
        self.target = redis_target(target)
        if self.target is None:
            raise ValueError("RespClient needs a Redis target")
        if self.target.is_sentinel:
            self.options: dict[str, Any] = {"username": self.target.username, "password": self.target.password}
            self.options["db"] = self.target.db
            self._sentinels = list(self.target.sentinels)
        else:
            self.options = parse_url(self.target.url)
        self.stall_seconds = stall_seconds
        self.connect_seconds = connect_seconds if connect_seconds is not None else max(stall_seconds, 0.05)
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None
        self._shas: dict[str, str] = {}
        self.down_reason: str | None = None  # set while the breaker is open
        self.down_since = 0.0
        self._probe: asyncio.Task | None = None

    @property
    def address(self) -> str:
        options = self.options
        if self.target.is_sentinel:
            return f"{self.target.master} ({options.get('host', '?')}:{options.get('port', '?')}, via sentinels)"
        return options.get("path") or f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"

    async def _master_address(self) -> tuple[str, int]:
        """Ask the sentinels, in turn, where the master is; the one that answered is asked first next time."""
        loop = asyncio.get_running_loop()
        share = self.connect_seconds / (len(self._sentinels) + 1)  # leaves a share for the master itself
        problems = []
        for index, (host, port) in enumerate(list(self._sentinels)):
            transport = None
            try:
                async with asyncio.timeout(share):
                    transport, protocol = await loop.create_connection(
                        lambda: _Protocol(self.stall_seconds, lambda *_: None), host, port
                    )
                    if self.target.sentinel_password:
                        await protocol.send(("AUTH", self.target.sentinel_password))
                    reply = await protocol.send(("SENTINEL", "get-master-addr-by-name", self.target.master))
            except (OSError, TimeoutError, RespError) as exc:
                problems.append(f"{host}:{port} {exc.__class__.__name__}")
                continue
            finally:
                if transport is not None:
                    transport.abort()
            if reply:
                if index:
                    self._sentinels.insert(0, self._sentinels.pop(index))
                return reply[0].decode(), int(reply[1])
            problems.append(f"{host}:{port} knows no master {self.target.master!r}")
        raise RespUnavailable("connect_error", "no sentinel named the master: " + "; ".join(problems))

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            return protocol
        if self.down_reason is not None:
            raise RespUnavailable("breaker_open", self.down_reason)
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        try:
            async with asyncio.timeout(self.connect_seconds):
                protocol = await self._open()
        except (OSError, TimeoutError, RespError) as exc:
            if isinstance(exc, RespUnavailable) and exc.reason == "stalled":
                raise  # the watchdog opened the breaker already
            self._open_breaker("connect_error", f"{exc.__class__.__name__}: {exc}")
            raise RespUnavailable("connect_error", f"{exc.__class__.__name__}: {exc}") from exc
        self._protocol = protocol
        return protocol

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if self.target.is_sentinel:
            self.options["host"], self.options["port"] = await self._master_address()
        options = self.options

        def factory() -> _Protocol:
            return _Protocol(self.stall_seconds, self._stalled)

        if options.get("path"):
            _, protocol = await loop.create_unix_connection(factory, options["path"])
        else:
            tls = ssl.create_default_context() if options.get("connection_class") is SSLConnection else None
            _, protocol = await loop.create_connection(
                factory, options.get("host", "localhost"), options.get("port", 6379), ssl=tls
            )
        setup: list[tuple] = []
        if options.get("password"):
            auth = ("AUTH", options["username"], options["password"]) if options.get("username") else None
            setup.append(auth or ("AUTH", options["password"]))
        if options.get("db"):
            setup.append(("SELECT", options["db"]))
        if self.target.is_sentinel:
            setup.append(("ROLE",))
        try:
            replies = [await future for future in [protocol.send(command) for command in setup]]
            if self.target.is_sentinel and replies[-1][0] != b"master":
                raise RespUnavailable("connect_error", f"{self.address} is not the master (yet)")
        except BaseException:
            protocol.transport.abort()
            raise
        return protocol

    def _stalled(self, waited: float, pending: int) -> None:
        self._open_breaker("stalled", f"no reply for {waited:.2f} s with {pending} commands pending")

    def _open_breaker(self, reason: str, detail: str) -> None:
        if self.down_reason is None:
            self.down_reason = reason
            self.down_since = time.monotonic()
            log.warning("redis %s unavailable (%s: %s); failing fast until it answers", self.address, reason, detail)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_healthy())

    async def _probe_until_healthy(self) -> None:
        """One probe per client while the breaker is open: reconnect and PING until Redis answers."""
        while self.down_reason is not None:
            await asyncio.sleep(PROBE_INTERVAL_SECONDS)
            try:
                async with asyncio.timeout(self.connect_seconds):
                    protocol = await self._open()
                if await protocol.send(("PING",)) != b"PONG":
                    protocol.transport.abort()
                    continue
            except (OSError, TimeoutError, RespError):
                continue
            old = self._protocol
            self._protocol = protocol
            if old is not None and old is not protocol and old.transport is not None:
                old.transport.abort()
            log.warning("redis %s answers again after %.1f s", self.address, time.monotonic() - self.down_since)
            self.down_reason = None

    async def execute(self, *args: Any) -> Any:
        protocol = await self._connection()
        return await protocol.send(args)

    async def execute_asking(self, *args: Any) -> Any:
        """``ASKING`` then the command, back to back on the connection (a cluster's ASK redirect)."""
        protocol = await self._connection()
        _ok, reply = await asyncio.gather(protocol.send(("ASKING",)), protocol.send(args))
        return reply

    async def evalsha(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, loading the script when Redis does not know it (first use, or Redis restarted)."""
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self.execute("SCRIPT", "LOAD", script)
        return await self.execute("EVALSHA", sha, len(keys), *keys, *args)

    def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
