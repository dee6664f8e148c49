"""The gateway as an MCP client: one pooled SDK ``ClientSession`` per upstream server and process.

A session lives in its own task (the SDK's transports are anyio context managers: they must be entered
and left by one task), started on first use and reused by every caller of every tenant the server
belongs to. An edited server (its ``version`` changes) or a dead session gets a fresh connection on its
next use. Tool lists are cached ``MCP_TOOLS_CACHE_SECONDS`` per server, so a ``tools/list`` from a caller
costs no upstream round trip in the steady state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_REQUEST, PaginatedRequestParams

from apps.mcp.catalog import ServerSpec
from apps.mcp.models import Transport

logger = logging.getLogger("apps.mcp")
CONNECT_TIMEOUT_SECONDS = 15.0
RECONNECT_BACKOFF_SECONDS = 5.0  # after a failed connect, callers are refused at once this long
STREAM_READ_SECONDS = 300.0  # a server may hold its notification stream open this long between events


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer in time (the caller sees a 502-like error)."""


class UpstreamSession:
    """One live ``ClientSession``, owned by its task from connect to close."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.session: ClientSession | None = None
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._error: BaseException | None = None
        self._task: asyncio.Task | None = None

    @property
    def alive(self) -> bool:
        return self.session is not None and self._task is not None and not self._task.done()

    async def open(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"mcp-upstream-{self.spec.id}")
        try:
            await asyncio.wait_for(self._ready.wait(), CONNECT_TIMEOUT_SECONDS)
        except TimeoutError:
            await self.close()
            raise UpstreamError(f"MCP server '{self.spec.name}' did not complete its handshake in time.") from None
        if self.session is None:
            raise UpstreamError(f"MCP server '{self.spec.name}' is unreachable ({type(self._error).__name__}).")

    async def _run(self) -> None:
        try:
            async with AsyncExitStack() as stack:
                streams = await stack.enter_async_context(self._transport(stack))
                session = await stack.enter_async_context(
                    ClientSession(streams[0], streams[1], read_timeout_seconds=self.spec.timeout_seconds)
                )
                await session.initialize()
                self.session = session
                self._ready.set()
                await self._stop.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the SDK raises exception groups from its task groups
            self._error = exc
            # The class only: an upstream's error text may echo the headers it was sent.
            logger.warning(
                "MCP server %r (id %s): session ended (%s)", self.spec.name, self.spec.id, type(exc).__name__
            )
        finally:
            self.session = None
            self._ready.set()

    def _transport(self, stack: AsyncExitStack):
        spec = self.spec
        if spec.transport == Transport.STDIO:
            return stdio_client(StdioServerParameters(command=spec.command, args=list(spec.args)))
        timeout = httpx2.Timeout(CONNECT_TIMEOUT_SECONDS, read=STREAM_READ_SECONDS)
        if spec.transport == Transport.SSE:
            return sse_client(spec.url, headers=dict(spec.headers), timeout=CONNECT_TIMEOUT_SECONDS)
        client = httpx2.AsyncClient(headers=dict(spec.headers), timeout=timeout, follow_redirects=False)
        stack.push_async_callback(client.aclose)
        return streamable_http_client(spec.url, http_client=client)

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
            except (TimeoutError, Exception):
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task


def _session_lost(exc: MCPError) -> bool:
    """A session the server no longer knows (it restarted): the SDK's client says "Session terminated" for a bare
    404, the SDK's server answers "Session not found", others word it their way. Always "invalid request"
    (-32600): the request was refused as a whole, never run, so asking again on a new session is safe."""
    return exc.error.code == INVALID_REQUEST and "session" in exc.error.message.lower()


class UpstreamPool:
    def __init__(self, *, tools_ttl: float) -> None:
        self.tools_ttl = tools_ttl
        self._sessions: dict[int, UpstreamSession] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._tools: dict[int, tuple[str, float, list[dict[str, Any]]]] = {}  # id -> (version, at, tools)
        self._down_until: dict[tuple[int, str], float] = {}

    async def _session(self, spec: ServerSpec) -> ClientSession:
        current = self._sessions.get(spec.id)
        if current is not None and current.alive and current.spec.version == spec.version:
            return current.session  # type: ignore[return-value]
        lock = self._locks.setdefault(spec.id, asyncio.Lock())
        async with lock:
            current = self._sessions.get(spec.id)
            if current is not None and current.alive and current.spec.version == spec.version:
                return current.session  # type: ignore[return-value]
            if current is not None:
                self._sessions.pop(spec.id, None)
                asyncio.create_task(current.close())  # noqa: RUF006 (the old session winds down on its own)
            if time.monotonic() < self._down_until.get((spec.id, spec.version), 0.0):  # (an edit retries at once)
                raise UpstreamError(f"MCP server '{spec.name}' is unreachable (retried in a few seconds).")
            fresh = UpstreamSession(spec)
            try:
                await fresh.open()
            except UpstreamError:
                # Callers fail fast for a while instead of each waiting out a connect to a server that is down.
                self._down_until[(spec.id, spec.version)] = time.monotonic() + RECONNECT_BACKOFF_SECONDS
                raise
            self._down_until.pop((spec.id, spec.version), None)
            self._sessions[spec.id] = fresh
            return fresh.session  # type: ignore[return-value]

    def _drop(self, spec: ServerSpec) -> None:
        found = self._sessions.pop(spec.id, None)
        if found is not None:
            asyncio.create_task(found.close())  # noqa: RUF006

    async def list_tools(self, spec: ServerSpec) -> list[dict[str, Any]]:
        """The server's tools as it describes them (JSON objects), from the cache when fresh."""
        cached = self._tools.get(spec.id)
        if cached is not None and cached[0] == spec.version and time.monotonic() - cached[1] < self.tools_ttl:
            return cached[2]
        for attempt in (1, 2):  # idempotent: a dead pooled session is replaced and asked once more
            session = await self._session(spec)
            try:
                tools: list[dict[str, Any]] = []
                cursor: str | None = None
                for _page in range(100):
                    params = PaginatedRequestParams(cursor=cursor) if cursor else None
                    result = await asyncio.wait_for(session.list_tools(params=params), spec.timeout_seconds)
                    tools += [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in result.tools]
                    cursor = result.next_cursor
                    if not cursor:
                        break
                self._tools[spec.id] = (spec.version, time.monotonic(), tools)
                return tools
            except (MCPError, TimeoutError, OSError, httpx2.HTTPError) as exc:
                self._drop(spec)
                if attempt == 2:
                    raise UpstreamError(f"MCP server '{spec.name}' failed to list its tools.") from exc
        raise AssertionError("unreachable")

    async def call_tool(self, spec: ServerSpec, tool: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
        """The upstream's ``CallToolResult`` as JSON; a tool's own failure is a result with ``isError``."""
        session = await self._session(spec)
        try:
            try:
                result = await asyncio.wait_for(session.call_tool(tool, arguments), spec.timeout_seconds)
            except MCPError as exc:
                if not _session_lost(exc):
                    raise  # the upstream's own JSON-RPC error: relayed as it is
                # The upstream forgot our session (it restarted): it never ran the call. Once more, on a new one.
                self._drop(spec)
                session = await self._session(spec)
                result = await asyncio.wait_for(session.call_tool(tool, arguments), spec.timeout_seconds)
        except MCPError:
            raise
        except TimeoutError:
            raise UpstreamError(f"MCP server '{spec.name}' did not answer within {spec.timeout_seconds:g} s.") from None
        except (OSError, httpx2.HTTPError) as exc:
            self._drop(spec)
            raise UpstreamError(f"MCP server '{spec.name}' is unreachable.") from exc
        return result.model_dump(by_alias=True, exclude_none=True, mode="json")

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
