"""What the /v1/realtime relay and the provider pass-through add, end to end on loopback.

    .venv/bin/python bench/realtime_bench.py [--round-trips 2000] [--responses 300] [--requests 500]

Starts the realtime upstream and the mock provider of tests/support (threads of this process), an embedded
gateway (one uvicorn worker, SQLite in a temporary directory, in-process counters) with a key and
deployments on them, and prints:

- realtime round trip: a small client event answered by the upstream (``session.update`` ->
  ``session.updated``), directly and through the gateway: p50 / p99 and what the relay adds;
- realtime response: ``response.create`` -> ``response.done`` (through the gateway each one is a
  limiter reservation, five relayed events and a spend event);
- realtime audio: 64 KiB ``input_audio_buffer.append`` messages per second, directly and through;
- pass-through: sequential ``POST /anthropic/v1/messages`` against ``POST /v1/messages`` (the same
  deployment), p50 / p99.

The clients share this process with the upstreams (and the GIL): compare the columns, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUN_DIR = tempfile.mkdtemp(prefix="realtime-bench-")
ENV = {
    "DJANGO_SETTINGS_MODULE": "gateway_project.settings.local",
    "GATEWAY_RUN_DIR": RUN_DIR,
    "DATABASE_URL": f"sqlite:///{RUN_DIR}/bench.sqlite3",
    "PROXY_SHED_LOOP_LAG_MS": "0",
    "GATEWAY_MASTER_KEY": "sk-master-realtime-bench-0123456789",
}
os.environ.update(ENV)
os.environ.pop("REDIS_URL", None)

import django  # noqa: E402

django.setup()

from websockets.sync.client import connect  # noqa: E402

from apps.proxy.models import ModelDeployment  # noqa: E402
from tests.factories import OrganizationFactory, TeamFactory, VirtualKeyFactory  # noqa: E402
from tests.support.mock_upstream import MockUpstream  # noqa: E402
from tests.support.processes import free_port  # noqa: E402
from tests.support.realtime_upstream import RealtimeUpstream  # noqa: E402


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def wait_for(ws, kind: str) -> None:
    while orjson.loads(ws.recv(timeout=30))["type"] != kind:
        pass


def round_trips(url: str, headers: dict[str, str], n: int) -> list[float]:
    update = orjson.dumps({"type": "session.update", "session": {"instructions": "bench"}}).decode()
    samples = []
    with connect(url, additional_headers=headers, open_timeout=30, max_size=None, compression=None) as ws:
        wait_for(ws, "session.created")
        for _ in range(n):
            started = time.perf_counter()
            ws.send(update)
            wait_for(ws, "session.updated")
            samples.append(time.perf_counter() - started)
    return samples


def responses(url: str, headers: dict[str, str], n: int) -> list[float]:
    create = orjson.dumps({"type": "response.create"}).decode()
    samples = []
    with connect(url, additional_headers=headers, open_timeout=30, max_size=None, compression=None) as ws:
        wait_for(ws, "session.created")
        for _ in range(n):
            started = time.perf_counter()
            ws.send(create)
            wait_for(ws, "response.done")
            samples.append(time.perf_counter() - started)
    return samples


def audio_rate(url: str, headers: dict[str, str], seconds: float = 3.0) -> float:
    chunk = orjson.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(os.urandom(48_000)).decode()})
    update = orjson.dumps({"type": "session.update", "session": {}}).decode()
    sent = 0
    with connect(url, additional_headers=headers, open_timeout=30, max_size=None, compression=None) as ws:
        wait_for(ws, "session.created")
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            for _ in range(20):
                ws.send(chunk.decode())
            sent += 20
            ws.send(update)  # a round trip every 20 appends: measures delivery, not the client's send buffer
            wait_for(ws, "session.updated")
        return sent / (time.perf_counter() - started)


def http_p(url: str, headers: dict[str, str], body: dict, n: int) -> list[float]:
    data = orjson.dumps(body)
    samples = []
    for _ in range(n):
        request = urllib.request.Request(url, data=data, headers={**headers, "content-type": "application/json"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        samples.append(time.perf_counter() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--responses", type=int, default=300)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # the upstreams' access lines
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True)
    with RealtimeUpstream() as realtime, MockUpstream() as mock:
        team = TeamFactory(organization=OrganizationFactory(name="bench"), name="bench")
        key = VirtualKeyFactory(team=team, alias="bench", rpm_limit=1_000_000, max_budget=1000)
        for name, provider, model, base in (
            ("rt", "openai", "gpt-realtime", realtime.url),
            ("claude", "anthropic", "claude-up", mock.base),
        ):
            deployment = ModelDeployment(model_name=name, provider=provider, model=model, api_base=base)
            deployment.set_credentials("sk-upstream-bench")
            deployment.save()
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", "gateway_project.asgi:application", "--port", str(port)]
        command += ["--log-level", "warning", "--no-access-log"]
        server = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **ENV})
        try:
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=2).read()
                    break
                except OSError:
                    time.sleep(0.1)
            auth = {"Authorization": f"Bearer {key.secret}"}
            direct = realtime.url.replace("http://", "ws://") + "/realtime?model=gpt-realtime"
            through = f"ws://127.0.0.1:{port}/v1/realtime?model=rt"
            round_trips(through, auth, 50)  # warm-up: registry, auth cache, connection
            print(f"{'realtime':<34} {'direct p50/p99 ms':>18} {'gateway p50/p99 ms':>19} {'added p50 ms':>13}")
            for label, fn, n in (
                ("round trip (session.update)", round_trips, args.round_trips),
                ("response.create -> response.done", responses, args.responses),
            ):
                d50, d99 = percentiles(fn(direct, {}, n))
                g50, g99 = percentiles(fn(through, auth, n))
                print(f"{label:<34} {d50:>8.3f} / {d99:<7.3f} {g50:>9.3f} / {g99:<7.3f} {g50 - d50:>13.3f}")
            d_rate, g_rate = audio_rate(direct, {}), audio_rate(through, auth)
            print(f"{'audio appends (64 KiB) per second':<34} {d_rate:>18.0f} {g_rate:>19.0f}")
            body = {"model": "claude", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
            gateway = f"http://127.0.0.1:{port}"
            http_p(gateway + "/v1/messages", auth, body, 50)
            http_p(gateway + "/anthropic/v1/messages", auth, body, 50)
            v1 = percentiles(http_p(gateway + "/v1/messages", auth, body, args.requests))
            native = percentiles(http_p(gateway + "/anthropic/v1/messages", auth, body, args.requests))
            upstream_body = {**body, "model": "claude-up"}
            upstream = percentiles(http_p(mock.base + "/v1/messages", {}, upstream_body, args.requests))
            print(f"{'messages, sequential':<34} {'p50 ms':>8} {'p99 ms':>8}")
            for label, (p50, p99) in (("mock upstream directly", upstream), ("/v1/messages", v1),
                                      ("/anthropic/v1/messages", native)):  # fmt: skip
                print(f"{label:<34} {p50:>8.3f} {p99:>8.3f}")
        finally:
            server.terminate()
            server.wait(20)


if __name__ == "__main__":
    main()
