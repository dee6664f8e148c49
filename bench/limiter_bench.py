"""The limiter chain's added latency per request: pre_call + post_call of the full PROXY_MIDDLEWARE chain.

    .venv/bin/python bench/limiter_bench.py [--requests N] [--concurrency C]

Uses REDIS_URL when set, otherwise starts a throwaway redis-server on a free loopback port. Each request
charges key, user, team and organization (RPM, TPM, parallel slots, budget), a per-model limit, the
deployment's capacity, the model group's priority counters and a session cap: 18 counters, one EVALSHA
before the call and one after. Prints p50/p90/p99/mean per request for Redis and for the memory backend.
``--clients resp,redis-py`` also runs the Redis backend over redis-py's asyncio client (hiredis parser,
a connection pool) instead of the limiter's own pipelined client, for comparison (issue 13).
``--clients cluster,cluster-redis-py`` runs the cluster backend on a throwaway three-master Redis Cluster
on loopback, over the limiter's own per-master clients and over redis-py's asyncio ``RedisCluster``
(issue 17: which client the cluster backend keeps). In ``full`` the counters lie in four slots
(organization, user, deployment, model group): four scripts in parallel, reserve-then-roll-back.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings.test")
_RUN_DIR = None if "GATEWAY_RUN_DIR" in os.environ else tempfile.mkdtemp(prefix="gw-bench-run-")
os.environ.setdefault("GATEWAY_RUN_DIR", _RUN_DIR or "")


def start_redis() -> tuple[str, subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="gw-bench-redis-")
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return f"redis://127.0.0.1:{port}/0", process, workdir


def setup_django(redis_url: str) -> None:
    os.environ["REDIS_URL"] = redis_url
    import django

    django.setup()


def contexts(n: int, profile: str):
    """``full``: every limiter and scope at once. ``typical``: a key and its team with RPM, TPM and a budget."""
    from apps.proxy.context import KeyContext, RequestContext, ScopeLimits
    from apps.proxy.registry import Deployment, Group

    big = {"rpm_limit": 10**9, "tpm_limit": 10**12, "max_parallel_requests": 10**6, "max_budget": Decimal(10**6)}
    if profile == "typical":
        big.pop("max_parallel_requests")
        names: tuple[str, ...] = ("key", "team")
    else:
        names = ("key", "user", "team", "organization")
    scopes = tuple(ScopeLimits(scope=s, id=f"bench-{s}", budget_duration="1d", **big) for s in names)
    per_model = ScopeLimits(scope="model", id="key:bench:gpt-4o-mini", model="gpt-4o-mini", rpm_limit=10**9)
    full = profile == "full"
    # The deployment and group the proxy would have routed to (ctx.deployment / ctx.group).
    dep = Deployment(1, "gpt-4o-mini", "openai", "gpt-4o-mini", rpm_limit=10**9, tpm_limit=10**12,
                     max_parallel_requests=10**6)  # fmt: skip
    grp = Group("gpt-4o-mini", (dep,), rpm_capacity=10**9, tpm_capacity=10**12)
    key = KeyContext(
        key_id=1, key_alias="bench", team_id=1, team_name="Bench", organization_id=1, organization_name="Bench",
        user_id=1, allowed_models=None, scopes=scopes, key_model_limits={"gpt-4o-mini": per_model} if full else {},
        priority=1, session_max_iterations=10**9 if full else None,
    )  # fmt: skip
    for _ in range(n):
        yield RequestContext(
            request_id=uuid.uuid4().hex, key=key, route="/v1/chat/completions", model="gpt-4o-mini",
            llm_provider="openai", deployment_id=1 if full else None, deployment=dep if full else None,
            group=grp if full else None, estimated_prompt_tokens=20,
            max_output_tokens=100, estimated_cost=Decimal("0.0001"), session_id="bench-session",
        )  # fmt: skip


async def run(backend, requests: int, concurrency: int, profile: str) -> tuple[list[tuple[float, float]], int]:
    from apps.proxy.context import CallResult
    from apps.ratelimit.chain import build_chain
    from apps.ratelimit.state import limiter_state

    chain = build_chain(backend=backend)
    result = CallResult(status=200, prompt_tokens=20, completion_tokens=50, cost=Decimal("0.00005"))
    timings: list[tuple[float, float]] = []
    checks = 0
    queue = list(contexts(requests, profile))

    async def worker():
        nonlocal checks
        while queue:
            ctx = queue.pop()
            started = time.perf_counter()
            await chain.pre_call(ctx)
            admitted = time.perf_counter()
            await chain.post_call(ctx, result)
            done = time.perf_counter()
            timings.append(((admitted - started) * 1000, (done - started) * 1000))
            checks = len(limiter_state(ctx).plan.checks)

    for ctx in contexts(200, profile):  # warm up: connections, script cache, imports
        await chain.pre_call(ctx)
        await chain.post_call(ctx, result)
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    pyclient = backend.__dict__.get("_pyclient")
    if isinstance(pyclient, RedisPyCluster):
        await pyclient.redis.aclose()
    print(f"  {backend.name}: {requests / elapsed:,.0f} requests/s through pre_call + post_call (one core)")
    return timings, checks


class RedisPyClient:
    """The ``RespClient`` surface (execute, evalsha, close) over redis-py's asyncio client, for comparison."""

    def __init__(self, url: str) -> None:
        import hashlib

        import redis.asyncio as aioredis

        self.redis = aioredis.Redis.from_url(url, max_connections=256)
        self.sha = lambda script: hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()

    async def execute(self, *args):
        return await self.redis.execute_command(*args)

    async def evalsha(self, script: str, keys: list[str], args: list):
        from redis.exceptions import NoScriptError

        try:
            return await self.redis.evalsha(self.sha(script), len(keys), *keys, *args)
        except NoScriptError:
            await self.redis.script_load(script)
            return await self.redis.evalsha(self.sha(script), len(keys), *keys, *args)

    def close(self) -> None:
        return None


class RedisPyCluster:
    """The ``RespCluster`` surface (execute_on, evalsha, close) over redis-py's asyncio ``RedisCluster``."""

    def __init__(self, nodes: list[tuple[str, int]]) -> None:
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        self.redis = RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes], max_connections=256)
        self.scripts: dict[str, object] = {}

    async def execute_on(self, key: str, *args):
        return await self.redis.execute_command(*args)

    async def evalsha(self, script: str, keys: list[str], args: list):
        registered = self.scripts.get(script)
        if registered is None:
            registered = self.scripts[script] = self.redis.register_script(script)
        return await registered(keys=keys, args=args)

    def close(self) -> None:
        return None


def cluster_backend(client: str, nodes: list[tuple[str, int]]):
    from apps.ratelimit.backends.cluster_backend import ClusterBackend

    backend = ClusterBackend(nodes, timeout_ms=1000)
    if client == "cluster-redis-py":
        backend.name = "cluster-redis-py"
        backend._redis = lambda: backend.__dict__.setdefault("_pyclient", RedisPyCluster(nodes))
    return backend


def redis_backend(client: str, redis_url: str):
    from apps.ratelimit.backends.redis_backend import RedisBackend

    backend = RedisBackend(redis_url, timeout_ms=1000)
    if client == "redis-py":
        backend.name = "redis-py"
        backend._redis = lambda: backend.__dict__.setdefault("_pyclient", RedisPyClient(redis_url))
    return backend


def report(name: str, timings: list[tuple[float, float]], checks: int, concurrency: int) -> None:
    for part, values in (("pre_call", [t[0] for t in timings]), ("pre+post", [t[1] for t in timings])):
        values.sort()
        pct = lambda p, v=values: v[min(len(v) - 1, int(len(v) * p))]  # noqa: E731
        print(
            f"{name:<15} {part:<9} c={concurrency:<3} n={len(values):<6} counters={checks:<3} "
            f"p50={pct(0.50):.3f} ms  p90={pct(0.90):.3f} ms  p99={pct(0.99):.3f} ms  "
            f"mean={statistics.fmean(values):.3f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--profiles", default="typical,full", help="comma-separated: typical, full")
    parser.add_argument(
        "--clients", default="resp", help="comma-separated: resp (the limiter's own), redis-py, cluster[-redis-py]"
    )
    args = parser.parse_args()

    redis_url = os.environ.get("REDIS_URL", "")
    process = workdir = cluster = None
    if not redis_url:
        redis_url, process, workdir = start_redis()
    clients = args.clients.split(",")
    if any(client.startswith("cluster") for client in clients):
        from tests.support.redis_cluster import RedisCluster

        cluster = RedisCluster(masters=3)
        cluster.start()
    try:
        setup_django(redis_url)
        from apps.ratelimit.backends.memory import MemoryBackend

        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        for profile in args.profiles.split(","):
            for client in clients:
                if client.startswith("cluster"):
                    backend = cluster_backend(client, [("127.0.0.1", port) for port in cluster.ports])
                else:
                    backend = redis_backend(client, redis_url)
                timings, checks = asyncio.run(run(backend, args.requests, args.concurrency, profile))
                report(f"{backend.name}/{profile}", timings, checks, args.concurrency)
            timings, checks = asyncio.run(run(MemoryBackend(), args.requests, args.concurrency, profile))
            report(f"memory/{profile}", timings, checks, args.concurrency)
    finally:
        if cluster is not None:
            cluster.stop()
        if _RUN_DIR:
            shutil.rmtree(_RUN_DIR, ignore_errors=True)
        if process is not None:
            process.terminate()
            process.wait(10)
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
