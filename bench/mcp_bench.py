"""What the /mcp gateway adds to a tool call: the SDK's client calling a real MCP server directly, and
through a gateway, one call at a time and concurrently.

    python bench/mcp_bench.py [--calls 300] [--concurrency 8]

Starts, on loopback, the tests' MCP server (the SDK's MCPServer over streamable HTTP, its own process) and a
gateway in the embedded default (its own process: SQLite, in-process counters, no Redis), registers the
server for a tenant with a grant and a tool-call limit, then times ``tools/call add`` with the SDK's
``ClientSession`` both ways and ``tools/list`` through the gateway (served from its cache). Prints median
and p95 latency and calls per second; the difference is the gateway's share (auth, grant check, limiter
plan, the pooled upstream session, the spend event). Everything it starts it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUN_DIR = tempfile.mkdtemp(prefix="mcp-bench-")
os.environ["GATEWAY_RUN_DIR"] = RUN_DIR
os.environ["DJANGO_SETTINGS_MODULE"] = "gateway_project.settings.local"
os.environ.pop("REDIS_URL", None)
os.environ.pop("DATABASE_URL", None)

import django  # noqa: E402

django.setup()

import httpx2  # noqa: E402
from django.core.management import call_command  # noqa: E402
from mcp import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from apps.keys.services import key_create  # noqa: E402
from apps.mcp.services import mcp_grant_create, mcp_server_create  # noqa: E402
from apps.provisioning.services import OPERATOR  # noqa: E402
from apps.teams.models import Organization, Team  # noqa: E402
from tests.support.mcp_server import McpUpstream  # noqa: E402
from tests.support.processes import ServerProcess, free_port  # noqa: E402


def gateway_process() -> ServerProcess:
    port = free_port()
    env = {**os.environ, "GATEWAY_RUN_DIR": RUN_DIR, "PROXY_SHED_LOOP_LAG_MS": "0", "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "uvicorn", "gateway_project.asgi:application", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1", "--log-level", "warning", "--no-access-log"]  # fmt: skip
    server = ServerProcess(
        command, env=env, ready_url=f"http://127.0.0.1:{port}/health/live", log_path=Path(RUN_DIR) / "gateway.log"
    )
    server.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return server


async def timed_calls(
    url: str, secret: str | None, tool: str, calls: int, concurrency: int
) -> tuple[list[float], float]:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    latencies: list[float] = []

    async def one_session(count: int) -> None:
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as client,
            streamable_http_client(url, http_client=client) as streams,
            ClientSession(streams[0], streams[1]) as session,
        ):
            await session.initialize()
            for _ in range(10):  # warm: connections, the gateway's caches and its upstream session
                await session.call_tool(tool, {"a": 1, "b": 2})
            for i in range(count):
                started = time.perf_counter()
                result = await session.call_tool(tool, {"a": i, "b": 1})
                latencies.append(time.perf_counter() - started)
                assert not result.is_error, result

    started = time.perf_counter()
    per = calls // concurrency
    await asyncio.gather(*(one_session(per) for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


async def list_latency(url: str, secret: str, n: int) -> list[float]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {secret}"}, timeout=60) as client,
        streamable_http_client(url, http_client=client) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        await session.initialize()
        await session.list_tools()
        out = []
        for _ in range(n):
            started = time.perf_counter()
            await session.list_tools()
            out.append(time.perf_counter() - started)
        return out


def row(label: str, latencies: list[float], wall: float | None = None) -> str:
    ordered = sorted(latencies)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    rate = f"{len(latencies) / wall:8.0f}/s" if wall else " " * 10
    return f"{label:<34} median {statistics.median(ordered) * 1000:7.2f} ms   p95 {p95 * 1000:7.2f} ms  {rate}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    org = Organization.objects.create(name="bench")
    team = Team.objects.create(organization=org, name="agents")
    secret = key_create(actor=OPERATOR, team=team, alias="bench").secret
    with McpUpstream("tools") as upstream, gateway_process() as gateway:
        server = mcp_server_create(actor=OPERATOR, organization=org, name="tools", url=upstream.url)
        mcp_grant_create(actor=OPERATOR, server=server, team=team, all_tools=True, tool_calls_per_minute=1_000_000)
        via = gateway.url + "/mcp"  # type: ignore[attr-defined]
        print(f"tools/call add, {args.calls} calls; SDK ClientSession over streamable HTTP, all on loopback")
        for concurrency in (1, args.concurrency):
            direct, direct_wall = asyncio.run(timed_calls(upstream.url, None, "add", args.calls, concurrency))
            proxied, proxied_wall = asyncio.run(timed_calls(via, secret, "tools__add", args.calls, concurrency))
            print(row(f"direct to the server, c={concurrency}", direct, direct_wall))
            print(row(f"through the gateway, c={concurrency}", proxied, proxied_wall))
            added = (statistics.median(proxied) - statistics.median(direct)) * 1000
            print(f"{'  gateway adds (median)':<34} {added:7.2f} ms")
        print(row("tools/list via gateway (cached)", asyncio.run(list_latency(via, secret, 200))))


if __name__ == "__main__":
    main()
