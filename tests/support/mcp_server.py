"""A real MCP server for the /mcp tests: the SDK's MCPServer (FastMCP) over streamable HTTP, in its own process.

Run as ``python -m tests.support.mcp_server PORT|stdio [NAME]``. Tools: ``echo``, ``add``, ``secret_dump`` (the
one tests forbid), ``hold`` (runs until ``GET /release``) and ``whoami`` (returns the Authorization header
it was sent, so tests can check the gateway injects the server's stored credentials). ``GET /calls``
answers how often each tool ran, so a test can prove a refused call never reached it. ``McpUpstream``
starts it on a free port.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import sys
import tempfile
import urllib.request

import httpx2
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from starlette.responses import JSONResponse

from tests.support.processes import ROOT, ServerProcess, free_port


class McpUpstream(ServerProcess):
    """The server on a free port; ``transport`` "sse" serves the legacy HTTP+SSE transport at /sse instead."""

    def __init__(self, name: str = "upstream", transport: str = "http", port: int | None = None) -> None:
        self.port = port or free_port()  # a given port: the same server restarted
        self.url = f"http://127.0.0.1:{self.port}/" + ("sse" if transport == "sse" else "mcp")
        fd, log_path = tempfile.mkstemp(prefix="mcp-upstream-", suffix=".log")
        os.close(fd)
        super().__init__(
            [sys.executable, "-m", "tests.support.mcp_server", str(self.port), name, transport],
            env={**os.environ, "PYTHONPATH": str(ROOT)},  # it needs no database: no child_env()
            ready_url=f"http://127.0.0.1:{self.port}/calls",
            log_path=log_path,
        )

    def calls(self) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/calls", timeout=5) as response:
            return json.loads(response.read())

    def release(self) -> None:
        """Let every ``hold`` call running (and the next ones) return."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/release", timeout=5):
            pass


@contextlib.asynccontextmanager
async def mcp_session(gateway, secret: str):
    """The SDK's ClientSession over streamable HTTP to ``gateway``'s /mcp with a virtual key, initialized."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret}"}, timeout=30) as client,
        streamable_http_client(gateway.url + "/mcp", http_client=client) as streams,
        ClientSession(streams[0], streams[1], read_timeout_seconds=30) as session,
    ):
        await session.initialize()
        yield session


def main(port: int, name: str, transport: str = "http") -> None:
    calls: collections.Counter[str] = collections.Counter()
    server = MCPServer(name)

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        calls["echo"] += 1
        return f"{name} says: {text}"

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        calls["add"] += 1
        return a + b

    @server.tool()
    def secret_dump() -> str:
        """A tool no test key may call."""
        calls["secret_dump"] += 1
        return "everything"

    @server.tool()
    def whoami(ctx: Context) -> str:
        """The Authorization header this server was sent."""
        calls["whoami"] += 1
        request = ctx.request_context.request
        return request.headers.get("authorization", "") if request is not None else ""

    released = asyncio.Event()

    @server.tool()
    async def hold() -> str:
        """Runs until the test calls GET /release: a call that stays in flight as long as a test needs."""
        calls["hold"] += 1
        await asyncio.wait_for(released.wait(), 120)
        return "released"

    @server.custom_route("/release", methods=["GET"])
    async def release(_request):
        released.set()
        return JSONResponse({"released": True})

    @server.custom_route("/calls", methods=["GET"])
    async def get_calls(_request):
        return JSONResponse(dict(calls))

    if port == 0:  # stdio: the gateway starts this process itself and talks over its stdin and stdout
        server.run("stdio")
        return
    app = server.sse_app() if transport == "sse" else server.streamable_http_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def stdio_args(name: str) -> list[str]:
    """The arguments a stdio server entry needs (its command is ``sys.executable``, run from the repository root)."""
    return ["-m", "tests.support.mcp_server", "stdio", name]


if __name__ == "__main__":
    port = 0 if sys.argv[1] == "stdio" else int(sys.argv[1])
    main(port, sys.argv[2] if len(sys.argv) > 2 else "upstream", sys.argv[3] if len(sys.argv) > 3 else "http")
