"""Open-loop load for the /v1 proxy: requests arrive at a fixed rate whatever the server's answers do.

  python bench/openloop.py --url http://127.0.0.1:4000/v1/chat/completions --key sk-... --rate 6000 --duration 20

wrk is closed-loop (each connection waits for its answer before sending again), so a slow server slows its
own load down and overload never builds up; real clients keep arriving. Here --conns keep-alive connections
are opened first (a load balancer's pool in front of the worker); each arrival goes out on an idle one or
waits its turn in a FIFO, and its latency is measured from its scheduled arrival (no coordinated omission).
A request not answered within --timeout of its arrival (queued or sent) counts as a timeout. Prints one
JSON line: offered rate, goodput (2xx per second), shed (503) per second, other outcomes, and latency
percentiles of the 2xx answers and of all answers, and the goodput within --slo (default 1 s).
Loopback only; bounded in time (duration + timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
import urllib.parse
from collections import Counter, deque


class Client(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; parses just enough of each answer (status, content-length)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.started = 0.0
        self.busy = False
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.ready.set_result(True)

    def connection_lost(self, exc) -> None:
        self.transport = None
        if not self.ready.done():
            self.ready.set_result(False)
        if self.busy:
            self.busy = False
            self.run.done(self, "conn_lost", keep=False)
        self.run.forget(self)

    def send(self, scheduled: float) -> None:
        self.started, self.busy, self.buffer = scheduled, True, b""
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        length = 0
        at = head.find(b"content-length:")
        if at >= 0:
            length = int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None].strip())
        if len(self.buffer) < end + 4 + length:
            return
        status = self.buffer[9:12].decode()
        keep = b"connection: close" not in head
        self.busy = False
        self.run.done(self, status, keep=keep)


class Run:
    def __init__(self, args) -> None:
        url = urllib.parse.urlparse(args.url)
        if url.hostname not in ("127.0.0.1", "localhost"):
            raise SystemExit("loopback targets only")
        self.host, self.port = url.hostname, url.port or 80
        body = json.dumps(
            {"model": args.model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
        ).encode()
        self.request = (
            f"POST {url.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Bearer {args.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.args = args
        self.idle: list[Client] = []
        self.open: set[Client] = set()
        self.statuses: Counter[str] = Counter()
        self.ok_latency: list[float] = []
        self.all_latency: list[float] = []
        self.sent = 0
        self.peak_conns = 0
        self.waiting: deque[float] = deque()
        self.peak_waiting = 0
        self.connecting = 0
        self.tasks: set[asyncio.Task] = set()

    def done(self, client: Client, status: str, *, keep: bool) -> None:
        latency = time.monotonic() - client.started
        self.statuses[status] += 1
        self.all_latency.append(latency)
        if status.startswith("2"):
            self.ok_latency.append(latency)
        if keep and client.transport is not None:
            self.release(client)
        elif client.transport is not None:
            client.transport.close()

    def forget(self, client: Client) -> None:
        self.open.discard(client)
        if client in self.idle:
            self.idle.remove(client)

    async def connect(self) -> None:
        self.connecting += 1
        try:
            _transport, client = await asyncio.get_running_loop().create_connection(
                lambda: Client(self), self.host, self.port
            )
        except OSError:
            self.statuses["connect_error"] += 1
            return
        finally:
            self.connecting -= 1
        self.open.add(client)
        self.peak_conns = max(self.peak_conns, len(self.open))
        self.release(client)

    def release(self, client: Client) -> None:
        """An idle connection takes the oldest waiting arrival still within its timeout."""
        now = time.monotonic()
        while self.waiting:
            scheduled = self.waiting.popleft()
            if now - scheduled > self.args.timeout:
                self.statuses["timeout"] += 1
                continue
            client.send(scheduled)
            return
        self.idle.append(client)

    def arrive(self, scheduled: float) -> None:
        while self.idle:
            client = self.idle.pop()
            if client.transport is not None and not client.busy:
                client.send(scheduled)
                return
        self.waiting.append(scheduled)
        self.peak_waiting = max(self.peak_waiting, len(self.waiting))

    async def sweep(self, deadline: float) -> None:
        """Sent requests older than the timeout are given up (their connection replaced) and counted."""
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for client in list(self.open):
                if client.busy and now - client.started > self.args.timeout:
                    client.busy = False
                    self.statuses["timeout"] += 1
                    if client.transport is not None:
                        client.transport.close()

    async def main(self) -> dict:
        args = self.args
        loop = asyncio.get_running_loop()
        for first in range(0, args.conns, 200):
            await asyncio.gather(*(self.connect() for _ in range(first, min(args.conns, first + 200))))
        start = time.monotonic()
        end = start + args.duration
        sweeper = loop.create_task(self.sweep(end + args.timeout + 1))
        while True:
            now = time.monotonic()
            if now >= end:
                break
            due = int((now - start) * args.rate)
            while self.sent < due:
                self.arrive(start + self.sent / args.rate)
                self.sent += 1
            if len(self.open) + self.connecting < args.conns:  # replace connections closed meanwhile
                task = loop.create_task(self.connect())
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            await asyncio.sleep(0.001)
        # Let the answers of the last arrivals come in (bounded by the timeout).
        while (self.waiting or any(c.busy for c in self.open)) and time.monotonic() < end + args.timeout + 1:
            await asyncio.sleep(0.05)
        self.statuses["timeout"] += len(self.waiting)
        sweeper.cancel()
        for client in list(self.open):
            if client.transport is not None:
                client.transport.close()
        return self.report(time.monotonic() - start)

    def report(self, elapsed: float) -> dict:
        def pct(values: list[float], p: float) -> float | None:
            if not values:
                return None
            ordered = sorted(values)
            return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 1)

        ok = sum(n for s, n in self.statuses.items() if s.startswith("2"))
        return {
            "offered_rps": self.args.rate,
            "sent": self.sent,
            "duration_s": self.args.duration,
            "goodput_rps": round(ok / self.args.duration, 1),
            # 2xx answered within --slo of arrival: what a client with that deadline got.
            "goodput_in_slo_rps": round(sum(1 for v in self.ok_latency if v <= self.args.slo) / self.args.duration, 1),
            "shed_rps": round(self.statuses.get("503", 0) / self.args.duration, 1),
            "statuses": dict(self.statuses),
            "ok_p50_ms": pct(self.ok_latency, 50),
            "ok_p99_ms": pct(self.ok_latency, 99),
            "all_p99_ms": pct(self.all_latency, 99),
            "conns": self.peak_conns,
            "peak_queued_in_client": self.peak_waiting,
            "elapsed_s": round(elapsed, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--rate", type=float, required=True, help="arrivals per second")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--slo", type=float, default=1.0, help="deadline (s) for goodput_in_slo_rps")
    parser.add_argument("--conns", type=int, default=2000, help="keep-alive connections (the pool in front)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.conns + 256)), hard))
    try:
        import uvloop

        result = uvloop.run(Run(args).main())
    except ImportError:
        result = asyncio.run(Run(args).main())
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
