"""What one /v1 request costs Redis and Postgres, for the capacity model in docs/operations.md.

    .venv/bin/python bench/capacity_bench.py [--requests 5000] [--concurrency 16] [--batch 500]

Starts throwaway Postgres + Redis (scripts/services.sh), the shared mock upstream and one gateway worker (uvicorn)
with Redis limits and the Redis spend outbox on: the demo key gets requests-per-minute, tokens-per-minute and
parallel-request limits and a daily budget, its team a monthly budget, its organization a monthly budget. Sends
``--requests`` chat completions, then drains the spend stream into Postgres as the Celery consumers do.
Prints, per request: Redis commands by name (``INFO commandstats``) and bytes in/out (``INFO stats``) on the
serving path and on the ingestion path; Postgres rows written and transactions per event (``pg_stat_database``),
and ingestion's events/s. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOCK = ROOT.parent / "shared" / "bench" / "mock_upstream.py"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}


def relaunch_with_services() -> int:
    workdir = tempfile.mkdtemp(prefix="capacity-bench-")
    script = (
        f"source scripts/services.sh; services_start {workdir} >&2; "
        f"trap 'services_stop {workdir}' EXIT; "
        f'"{sys.executable}" bench/capacity_bench.py "$@"'
    )
    return subprocess.call(["bash", "-c", script, "bench", *sys.argv[1:]], cwd=ROOT)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def redis_counters(client) -> tuple[dict[str, int], int, int, float]:
    """Calls per command (inside scripts too), bytes in and out, and the server's CPU seconds."""
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
    net = client.info("stats")
    cpu = client.info("cpu")
    seconds = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return calls, int(net["total_net_input_bytes"]), int(net["total_net_output_bytes"]), seconds


def redis_delta(before, after, per: int) -> tuple[str, float, float, float, float]:
    calls = {name: after[0].get(name, 0) - before[0].get(name, 0) for name in after[0]}
    calls = {name: n for name, n in calls.items() if n and name not in ("info", "ping", "client|setinfo")}
    total = sum(calls.values()) / per
    listed = ", ".join(f"{name} {n / per:.2f}" for name, n in sorted(calls.items(), key=lambda item: -item[1]))
    cpu_us = (after[3] - before[3]) / per * 1e6
    return listed, total, (after[1] - before[1]) / per, (after[2] - before[2]) / per, cpu_us


def pg_counters(cursor) -> tuple[int, int, int]:
    time.sleep(1.5)  # backends publish their counters at most once a second (Postgres 15)
    cursor.execute("SELECT pg_stat_clear_snapshot()")
    cursor.execute(
        "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted, blks_hit + blks_read FROM pg_stat_database "
        "WHERE datname = current_database()"
    )
    return cursor.fetchone()


async def send(url: str, key: str, total: int, concurrency: int) -> tuple[int, dict[int, int], float]:
    import aiohttp

    statuses: dict[int, int] = {}
    queue = iter(range(total))

    async def worker(session) -> None:
        for _ in queue:
            async with session.post(url, json=CHAT, headers={"Authorization": f"Bearer {key}"}) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return total, statuses, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        sys.exit(relaunch_with_services())

    run_dir = Path(tempfile.mkdtemp(prefix="capacity-gw-"))
    os.environ.update(GATEWAY_RUN_DIR=str(run_dir), DEBUG="false", PROXY_SHED_LOOP_LAG_MS="0")
    os.environ["DJANGO_SETTINGS_MODULE"] = "gateway_project.settings.local"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import redis
    from django.core.management import call_command
    from django.db import connection

    from apps.keys.models import VirtualKey
    from apps.spend.stream import stream_drain

    call_command("migrate", verbosity=0)
    processes: list[subprocess.Popen] = []
    try:
        mock_port = free_port()
        processes.append(subprocess.Popen([sys.executable, str(MOCK), "--port", str(mock_port), "--workers", "1"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        wait_http(f"http://127.0.0.1:{mock_port}/v1/models")
        call_command("bootstrap_demo", api_base=f"http://127.0.0.1:{mock_port}/v1", verbosity=0)
        key_text = (run_dir / "demo_key").read_text().strip()
        key = VirtualKey.objects.select_related("team", "organization").get()
        key.rpm_limit, key.tpm_limit, key.max_parallel_requests = 10**7, 10**9, 1000
        key.max_budget, key.budget_duration = 10**6, "1d"
        key.save()
        for owner in (key.team, key.organization):
            owner.max_budget, owner.budget_duration = 10**6, "1mo"
            owner.save()
        port = free_port()
        gateway = subprocess.Popen(
            [f"{Path(sys.executable).parent}/uvicorn", "gateway_project.asgi:application", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
             "--log-level", "warning"],
            cwd=ROOT, env=os.environ.copy(),
        )  # fmt: skip
        processes.append(gateway)
        wait_http(f"http://127.0.0.1:{port}/health/live")
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        asyncio.run(send(url, key_text, 200, 4))  # warm up: connections, caches, counters seeded
        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        stream_drain(batch_size=args.batch, max_seconds=600)
        before = redis_counters(client)
        sent, statuses, elapsed = asyncio.run(send(url, key_text, args.requests, args.concurrency))
        time.sleep(1.0)  # the outbox's last batch and the limiter's settlements
        serving = redis_counters(client)
        with connection.cursor() as cursor:
            pg_before = pg_counters(cursor)
        started = time.perf_counter()
        result = stream_drain(batch_size=args.batch, max_seconds=600)
        drain_seconds = time.perf_counter() - started
        ingest = redis_counters(client)
        with connection.cursor() as cursor:
            pg_after = pg_counters(cursor)
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(10)

    print(f"{sent} requests at concurrency {args.concurrency} through one gateway worker (limits + spend outbox on):")
    print(f"  statuses {statuses}; {sent / elapsed:,.0f} req/s on this shared machine (capacity: see bench/run.sh)")
    listed, total, bytes_in, bytes_out, cpu_us = redis_delta(before, serving, sent)
    print(f"  serving path, Redis per request: {total:.2f} commands executed, scripts' inner calls included ({listed})")
    print(f"    bytes to Redis {bytes_in:,.0f}, from Redis {bytes_out:,.0f}; Redis CPU {cpu_us:.1f} us")
    listed, total, bytes_in, bytes_out, cpu_us = redis_delta(serving, ingest, result.received or 1)
    print(f"  ingestion, Redis per event: {total:.3f} commands ({listed})")
    print(f"    bytes to Redis {bytes_in:,.0f}, from Redis {bytes_out:,.0f}; Redis CPU {cpu_us:.1f} us")
    events = result.inserted or 1
    commits, rows, _blocks = (pg_after[i] - pg_before[i] for i in range(3))
    print(f"  ingestion into Postgres: {result.inserted} events in {drain_seconds:.2f} s ({events / drain_seconds:,.0f}"
          f" events/s, one consumer, batch {args.batch}); {commits} transactions, {rows:,} rows written "
          f"({rows / events:.2f} per event, ledger + daily + monthly + budget windows)")  # fmt: skip


if __name__ == "__main__":
    main()
