#!/usr/bin/env python3
"""Soak: N minutes of sustained load at a fraction of capacity on four uvicorn workers (issue 13, item 3).

Not a test: it prints numbers. Everything runs on loopback and everything it starts it stops:

1. Postgres and Redis from ``scripts/services.sh``, ``migrate``, ``bootstrap_demo`` pointed at the shared
   mock upstream (``../shared/bench/mock_upstream.py``, or ``MOCK_UPSTREAM``), uvicorn with ``--workers 4``,
   a Celery worker and beat (the ledger fills on beat's schedule, as in production).
2. Capacity: a closed loop of ``--capacity-conc`` clients for ``--capacity-seconds``; the answers per second
   it reached is the capacity of this setup (load generator included: on a shared 2-core machine it is
   part of what limits the rate).
3. Soak: an open loop at ``--fraction`` (0.8) of that rate for ``--minutes`` (10): requests start on a
   fixed schedule whatever the latency (a slow gateway gets a growing queue, not a politer client).
   Every ``--sample-seconds`` the RSS, open file descriptors and TCP connections to Redis and to
   Postgres of each uvicorn worker (and of the Celery worker) are read from /proc.
4. The end: traffic stops, the script waits for ingestion, and compares the ledger's request ids with the
   answered ones (``ledger == answered``: none missing, none extra, none twice).

With ``--beat-outage S`` beat and the Celery worker are stopped (SIGTERM) ``--beat-outage-at`` seconds into
the soak for S seconds, then started again: the backlog that piled up in the spend stream and how long it
took to drain are printed, and the final ledger check covers it.

  GATEWAY_VENV=/path/to/venv bench/soak.py --minutes 10
  GATEWAY_VENV=/path/to/venv bench/soak.py --minutes 8 --beat-outage 300 --beat-outage-at 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("GATEWAY_VENV", ROOT / ".venv"))
PY = str(VENV / "bin" / "python")
MOCK = Path(os.environ.get("MOCK_UPSTREAM", ROOT.parent / "shared" / "bench" / "mock_upstream.py"))
BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"soak"}],"max_tokens":16}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.25)
    raise SystemExit(f"timed out waiting for {url}")


class Stack:
    """The services and processes of one soak run; ``close()`` stops every one of them."""

    def __init__(self, workdir: Path, workers: int) -> None:
        self.workdir = workdir
        self.workers = workers
        self.procs: list[subprocess.Popen] = []
        self.services = workdir / "services"
        self.env: dict[str, str] = {}

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (lives as long as the process)
        proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        # services.sh sweeps servers whose owner died: the owner is this script, not the short-lived bash.
        script = 'source scripts/services.sh && services_start "$1" >&2 && echo "$DATABASE_URL" && echo "$REDIS_URL"'
        owner = {**os.environ, "SERVICES_OWNER_PID": str(os.getpid())}
        out = subprocess.run(["bash", "-c", script, "_", str(self.services)], cwd=ROOT, check=True, text=True,
                             capture_output=True, env=owner)  # fmt: skip
        database_url, redis_url = out.stdout.split()
        self.pg_port = int(database_url.rsplit(":", 1)[1].split("/")[0])
        self.redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        self.database_url = database_url
        mock_port = self.mock_port = free_port()
        self.env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "DEBUG": "false",
                    "DJANGO_SETTINGS_MODULE": "gateway_project.settings.local", "PYTHONUNBUFFERED": "1",
                    "GATEWAY_RUN_DIR": str(self.workdir / "run"),
                    "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / "prometheus")}  # fmt: skip
        os.makedirs(self.env["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
        self._spawn("mock", [PY, str(MOCK), "--port", str(mock_port), "--workers", "1"])
        wait_http(f"http://127.0.0.1:{mock_port}/health")
        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=self.env, check=True)
        subprocess.run([PY, "manage.py", "bootstrap_demo", "--api-base", f"http://127.0.0.1:{mock_port}/v1"],
                       cwd=ROOT, env=self.env, check=True, capture_output=True)  # fmt: skip
        self.key = (self.workdir / "run" / "demo_key").read_text().strip()
        port = self.port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.redis_url = redis_url
        self.uvicorn = self._spawn("web", [
            PY, "-m", "uvicorn", "gateway_project.asgi:application", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(self.workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning",
        ])  # fmt: skip
        self.celery_start()
        wait_http(self.url + "/health/live")
        time.sleep(2)  # every worker up

    def celery_start(self) -> None:
        """The Celery worker and beat (separate processes, as production runs them)."""
        celery = str(VENV / "bin" / "celery")
        self.celery = self._spawn("worker", [celery, "-A", "gateway_project", "worker", "--pool=solo", "-l", "WARNING"])
        self.beat = self._spawn("beat", [celery, "-A", "gateway_project", "beat", "-l", "WARNING",
                                         "-s", str(self.workdir / "beat")])  # fmt: skip

    def celery_stop(self) -> None:
        """SIGTERM to beat and the worker (as an orchestrator stops them); waits until both are gone."""
        for proc in (self.beat, self.celery):
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in (self.beat, self.celery):
            proc.wait(60)

    def backlog(self) -> int:
        """Entries in the spend stream (ingested ones are deleted): what the ledger has not caught up with yet."""
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            return client.xlen("gateway:spend")
        finally:
            client.close()

    def worker_pids(self) -> list[int]:
        """uvicorn's worker processes: its children started by multiprocessing (not its resource tracker)."""
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == self.uvicorn.pid and "spawn_main" in _cmdline(int(entry)):
                    pids.append(int(entry))
        return pids

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        script = 'source scripts/services.sh && services_stop "$1"'
        subprocess.run(["bash", "-c", script, "_", str(self.services)], cwd=ROOT, check=False)
        shutil.rmtree(self.services, ignore_errors=True)  # the databases; the logs stay


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _socket_inodes(pid: int) -> tuple[int, set[str]]:
    """(open file descriptors, inodes of its sockets)."""
    fds, inodes = 0, set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            fds += 1
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return fds, inodes


def _connections(pid: int, inodes: set[str], ports: dict[str, int], serving: int) -> dict[str, int]:
    """Established TCP connections of ``pid``: to each of ``ports`` (by remote port), and ``clients``
    (accepted on the ``serving`` port), from /proc/<pid>/net/tcp*."""
    counts = dict.fromkeys([*ports, "clients"], 0)
    by_port = {port: name for name, port in ports.items()}
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "01" or fields[9] not in inodes:
                continue
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port in by_port:
                counts[by_port[remote_port]] += 1
            elif int(fields[1].rsplit(":", 1)[1], 16) == serving:
                counts["clients"] += 1
    return counts


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Sampler(threading.Thread):
    """Every ``interval`` s, per process: RSS (MiB), open fds, connections from clients ("in"), to the upstream
    ("up"), to Redis ("r") and to Postgres ("pg"); and the spend stream's length (the ledger's backlog)."""

    def __init__(self, stack: Stack, interval: float) -> None:
        super().__init__(daemon=True)
        self.stack, self.interval = stack, interval
        self.samples: list[tuple[float, dict[str, tuple[float, int, int, int]]]] = []
        self.stop_event = threading.Event()
        self.started = time.monotonic()

    def sample(self) -> None:
        ports = {"redis": self.stack.redis_port, "pg": self.stack.pg_port, "up": self.stack.mock_port}
        processes = {f"web{i + 1}": pid for i, pid in enumerate(sorted(self.stack.worker_pids()))}
        processes["celery"] = self.stack.celery.pid
        row = {}
        for name, pid in processes.items():
            fds, inodes = _socket_inodes(pid)
            conns = _connections(pid, inodes, ports, self.stack.port)
            row[name] = (_rss_mib(pid), fds, conns["clients"], conns["up"], conns["redis"], conns["pg"])
        self.samples.append((time.monotonic() - self.started, row))
        cells = "  ".join(
            f"{n} {r:5.1f}M {f:3d}fd {c:3d}in/{u:3d}up r{c_r:<2d} pg{c_p}" for n, (r, f, c, u, c_r, c_p) in row.items()
        )
        backlog = self.stack.backlog()
        print(f"  t={self.samples[-1][0]:6.0f}s  {cells}  stream {backlog}", flush=True)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()


class CeleryOutage(threading.Thread):
    """Beat and the Celery worker stopped ``seconds`` at ``at`` s into the soak, then started again; measures
    the backlog that piled up and how long after their return the stream was back to under a second's worth."""

    def __init__(self, stack: Stack, at: float, seconds: float, rate: float) -> None:
        super().__init__(daemon=True)
        self.stack, self.at, self.seconds, self.rate = stack, at, seconds, rate
        self.report = ""

    def run(self) -> None:
        time.sleep(self.at)
        self.stack.celery_stop()
        before = self.stack.backlog()
        time.sleep(self.seconds)
        backlog = self.stack.backlog()
        back = time.monotonic()
        self.stack.celery_start()
        while (left := self.stack.backlog()) > self.rate and time.monotonic() - back < 1800:
            time.sleep(1)
        self.report = (
            f"beat and worker down {self.seconds:.0f} s: stream {before} -> {backlog} entries; back under "
            f"{self.rate:.0f} ({left} left) {time.monotonic() - back:.1f} s after they returned"
        )
        print(self.report, flush=True)


class Load:
    """Chat requests with the demo key; answers counted, answered request ids kept for the ledger check."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url + "/v1/chat/completions"
        self.headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
        self.answered: set[str] = set()
        self.statuses: dict[int | str, int] = {}
        self.latencies: list[float] = []

    async def one(self, session) -> None:
        import aiohttp

        started = time.perf_counter()
        try:
            async with session.post(self.url, data=BODY, headers=self.headers) as response:
                await response.read()
                status: int | str = response.status
                if status == 200:
                    self.answered.add(response.headers["x-request-id"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
        self.latencies.append(time.perf_counter() - started)
        self.statuses[status] = self.statuses.get(status, 0) + 1

    async def closed_loop(self, session, conc: int, seconds: float) -> float:
        """``conc`` clients back to back for ``seconds``; answers per second."""
        deadline = time.monotonic() + seconds
        before = len(self.latencies)

        async def client() -> None:
            while time.monotonic() < deadline:
                await self.one(session)

        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(conc)))
        return (len(self.latencies) - before) / (time.monotonic() - started)

    async def open_loop(self, session, rate: float, seconds: float, max_in_flight: int) -> dict:
        """Start requests at ``rate``/s on a fixed schedule for ``seconds``; late starts are counted."""
        gate = asyncio.Semaphore(max_in_flight)
        tasks: set[asyncio.Task] = set()
        started = time.monotonic()
        sent = skipped = 0
        before = len(self.latencies)

        async def paced() -> None:
            try:
                await self.one(session)
            finally:
                gate.release()

        while (now := time.monotonic()) - started < seconds:
            due = int((now - started) * rate) - sent - skipped
            for _ in range(due):
                if gate.locked():
                    skipped += 1  # max_in_flight requests already waiting: the gateway is not keeping up
                    continue
                await gate.acquire()
                task = asyncio.ensure_future(paced())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
        latencies = sorted(self.latencies[before:])
        return {
            "sent": sent,
            "skipped": skipped,
            "achieved": len(latencies) / (time.monotonic() - started),
            "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else 0,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0,
        }


def ledger_ids(database_url: str) -> tuple[int, set[str]]:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = [r[0] for r in conn.execute("SELECT request_id FROM spend_spendlog")]
    return len(rows), set(rows)


async def soak(args, stack: Stack) -> None:
    import aiohttp

    load = Load(stack.url, stack.key)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await load.closed_loop(session, 16, 5)  # warm-up: connections, caches
        capacity = await load.closed_loop(session, args.capacity_conc, args.capacity_seconds)
        rate = capacity * args.fraction
        print(f"capacity {capacity:.0f} req/s (closed loop, c={args.capacity_conc}); soak at {rate:.0f} req/s "
              f"({args.fraction:.0%}) for {args.minutes:g} min, {stack.workers} workers", flush=True)  # fmt: skip
        sampler = Sampler(stack, args.sample_seconds)
        sampler.sample()
        sampler.start()
        outage = None
        if args.beat_outage:
            outage = CeleryOutage(stack, args.beat_outage_at, args.beat_outage, rate)
            outage.start()
        result = await load.open_loop(session, rate, args.minutes * 60, args.max_in_flight)
        sampler.stop_event.set()
        sampler.sample()
        if outage is not None:
            await asyncio.to_thread(outage.join)
    print(f"soak: sent {result['sent']}, skipped {result['skipped']} (gateway behind), achieved "
          f"{result['achieved']:.0f} req/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; "
          f"statuses {load.statuses}", flush=True)  # fmt: skip

    first, last = sampler.samples[0][1], sampler.samples[-1][1]
    for name in first:
        if name in last:
            (r0, f0, i0, u0, c0, p0), (r1, f1, i1, u1, c1, p1) = first[name], last[name]
            peak = max(s[1][name][0] for s in sampler.samples if name in s[1])
            print(f"  {name:7} RSS {r0:.1f} -> {r1:.1f} MiB (peak {peak:.1f}), fds {f0} -> {f1} "
                  f"(client connections {i0} -> {i1}, to the upstream {u0} -> {u1}), "
                  f"redis conns {c0} -> {c1}, postgres conns {p0} -> {p1}")  # fmt: skip

    deadline = time.monotonic() + args.ingest_timeout
    waited = time.monotonic()
    while True:
        rows, ids = ledger_ids(stack.database_url)
        if load.answered <= ids or time.monotonic() > deadline:
            break
        time.sleep(1)
    missing, extra = load.answered - ids, ids - load.answered
    verdict = "EXACT" if not missing and not extra and rows == len(ids) else "MISMATCH"
    print(f"ledger: {rows} rows for {len(load.answered)} answered requests ({verdict}: {len(missing)} missing, "
          f"{len(extra)} extra, {rows - len(ids)} doubled), complete {time.monotonic() - waited:.1f} s after the "
          "load stopped", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--fraction", type=float, default=0.8, help="of the measured capacity")
    parser.add_argument("--capacity-conc", type=int, default=64)
    parser.add_argument("--capacity-seconds", type=float, default=20)
    parser.add_argument("--sample-seconds", type=float, default=15)
    parser.add_argument("--max-in-flight", type=int, default=512)
    parser.add_argument("--ingest-timeout", type=float, default=300)
    parser.add_argument("--beat-outage", type=float, default=0, help="stop beat and worker this long (s)")
    parser.add_argument("--beat-outage-at", type=float, default=60, help="seconds into the soak")
    args = parser.parse_args()
    if Path(sys.executable) != Path(PY) and Path(PY).exists():  # run by the system python: use the gateway's venv
        os.execv(PY, [PY, __file__, *sys.argv[1:]])
    if not MOCK.exists():
        raise SystemExit(f"mock upstream not found at {MOCK} (set MOCK_UPSTREAM)")
    workdir = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    os.chmod(workdir, 0o755)  # Postgres runs as its own user under it when we are root
    stack = Stack(workdir, args.workers)
    try:
        stack.start()
        asyncio.run(soak(args, stack))
    finally:
        stack.close()
        print(f"(logs in {workdir})", file=sys.stderr)


if __name__ == "__main__":
    main()
