"""Load matrix for the /v1 proxy: wrk at several concurrencies, streaming TTFT, peak RSS.

  python bench/proxy_bench.py --target direct=http://127.0.0.1:8001/v1 --target gw=http://127.0.0.1:4000/v1 \
      --key gw=sk-... --rss-pid gw=1234 [--conc 1,8,32,64] [--duration 10] [--wrk-cpus 1]

Targets take turns inside every cell so machine noise hits all of them alike. Prints one JSON line
per cell (stderr) and a markdown table with the gateway's added p50 over the first target (stdout).
Loopback only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

CHAT = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a concise assistant that answers questions about distributed systems."},
        {
            "role": "user",
            "content": "Explain in two sentences why an API gateway adds latency, and how connection "
            "pooling to the upstream reduces it.",
        },
    ],
    "max_tokens": 64,
    "temperature": 0.2,
}
WRK_LUA = """
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"; wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
function done(s, lat, req)
  io.write(string.format('BENCH_JSON {"requests":%d,"rps":%.2f,"p50":%.3f,"p90":%.3f,"p99":%.3f,"non2xx":%d,' ..
    '"socket_errors":%d}\\n', s.requests, s.requests / (s.duration / 1e6), lat:percentile(50) / 1000,
    lat:percentile(90) / 1000, lat:percentile(99) / 1000, s.errors.status,
    s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout))
end
"""


def _loopback(url: str) -> str:
    host = urllib.parse.urlparse(url).hostname or ""
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        raise SystemExit(f"refusing non-loopback target {url}")
    return url.rstrip("/")


def tree_rss_mib(pid: int) -> float:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat[stat.rfind(")") + 2 :].split()[1]), []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    total_kb, stack, seen = 0, [pid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        stack.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            pass
    return total_kb / 1024


class RssSampler:
    def __init__(self, pid: int | None) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_mib(self.pid))
            self._stop.wait(0.25)

    def __enter__(self) -> RssSampler:
        if self.pid:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()


def wrk(url: str, key: str, conc: int, duration: int, body: dict, cpus: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        body_file, lua = Path(tmp, "body.json"), Path(tmp, "post.lua")
        body_file.write_text(json.dumps(body))
        lua.write_text(WRK_LUA)
        command = [
            "wrk",
            "-t1",
            f"-c{conc}",
            f"-d{duration}s",
            "--timeout",
            "30s",
            "-s",
            str(lua),
            url + "/chat/completions",
        ]
        if cpus:
            command = ["taskset", "-c", cpus, *command]
        env = {**os.environ, "BENCH_BODY_FILE": str(body_file), "BENCH_KEY": key}
        output = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration + 60).stdout
    line = next((ln for ln in output.splitlines() if ln.startswith("BENCH_JSON ")), None)
    return json.loads(line[len("BENCH_JSON ") :]) if line else {"rps": 0, "error": output[-500:]}


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    low = int(k)
    high = min(low + 1, len(values) - 1)
    return round(values[low] + (values[high] - values[low]) * (k - low), 3)


def ttft(url: str, key: str, n: int) -> dict:
    """Sequential streaming requests on one connection: headers, first content token, whole stream (ms)."""
    parsed = urllib.parse.urlparse(url)
    body = json.dumps({**CHAT, "stream": True}).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    first_byte, first_token, total, errors = [], [], [], 0
    for _ in range(n):
        started = time.perf_counter()
        conn.request("POST", parsed.path + "/chat/completions", body=body, headers=headers)
        response = conn.getresponse()
        got_headers = time.perf_counter()
        if response.status != 200:
            response.read()
            errors += 1
            continue
        token_at = None
        while line := response.readline():
            if (
                token_at is None
                and line.startswith(b"data:")
                and b'"content":"' in line
                and b'"content":""' not in line
            ):
                token_at = time.perf_counter()
            if line.strip() == b"data: [DONE]":
                break
        response.read()
        done = time.perf_counter()
        first_byte.append((got_headers - started) * 1000)
        total.append((done - started) * 1000)
        if token_at:
            first_token.append((token_at - started) * 1000)
    conn.close()
    return {
        "n": len(total),
        "errors": errors,
        "ttfb_p50": pct(first_byte, 50),
        "first_token_p50": pct(first_token, 50),
        "first_token_p99": pct(first_token, 99),
        "stream_total_p50": pct(total, 50),
    }


def pairs(values: list[str]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", action="append", required=True, help="NAME=BASE_URL (first = baseline)")
    parser.add_argument("--key", action="append", default=[], help="NAME=API_KEY")
    parser.add_argument("--rss-pid", action="append", default=[], help="NAME=PID")
    parser.add_argument("--conc", default="1,8,32,64")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--ttft-n", type=int, default=200)
    parser.add_argument("--wrk-cpus", default="1")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    targets = {name: _loopback(url) for name, url in pairs(args.target).items()}
    keys, pids = pairs(args.key), {k: int(v) for k, v in pairs(args.rss_pid).items()}
    results: dict[str, dict] = {name: {"cells": {}, "rss": 0.0} for name in targets}
    for name, url in targets.items():
        wrk(url, keys.get(name, ""), 8, args.warmup, CHAT, args.wrk_cpus)
    for conc in [int(c) for c in args.conc.split(",")]:
        for name, url in targets.items():
            with RssSampler(pids.get(name)) as sampler:
                cell = wrk(url, keys.get(name, ""), conc, args.duration, CHAT, args.wrk_cpus)
            results[name]["cells"][conc] = cell
            results[name]["rss"] = max(results[name]["rss"], sampler.peak)
            print(
                json.dumps({"target": name, "conc": conc, **cell, "rss_mib": round(sampler.peak, 1)}),
                file=sys.stderr,
                flush=True,
            )
            time.sleep(1)
    for name, url in targets.items():
        with RssSampler(pids.get(name)) as sampler:
            results[name]["ttft"] = ttft(url, keys.get(name, ""), args.ttft_n)
        results[name]["rss"] = max(results[name]["rss"], sampler.peak)
    baseline = next(iter(targets))
    concs = [int(c) for c in args.conc.split(",")]
    print(f"\n### /v1/chat/completions, non-streaming {args.label}\n")
    print(
        "| target | " + " | ".join(f"c={c} req/s (p50 / p99 ms)" for c in concs) + " | added p50 c=1 | peak RSS MiB |"
    )
    print("|---|" + "---|" * (len(concs) + 2))
    for name in targets:
        cells = results[name]["cells"]
        row = [f"{cells[c].get('rps', 0):,.0f} ({cells[c].get('p50')} / {cells[c].get('p99')})" for c in concs]
        added = ""
        if name != baseline and 1 in concs:
            added = f"{cells[1].get('p50', 0) - results[baseline]['cells'][1].get('p50', 0):+.3f} ms"
        rss = f"{results[name]['rss']:.1f}" if results[name]["rss"] else ""
        errors = sum(cells[c].get("non2xx", 0) + cells[c].get("socket_errors", 0) for c in concs)
        print(
            f"| {name}{' (errors: ' + str(errors) + ')' if errors else ''} | "
            + " | ".join(row)
            + f" | {added} | {rss} |"
        )
    print("\n### streaming (sequential, one connection)\n")
    print("| target | n | headers p50 ms | first token p50 / p99 ms | whole stream p50 ms |")
    print("|---|---|---|---|---|")
    for name in targets:
        t = results[name]["ttft"]
        print(
            f"| {name} | {t['n']} | {t['ttfb_p50']} | {t['first_token_p50']} / {t['first_token_p99']} "
            f"| {t['stream_total_p50']} |"
        )


if __name__ == "__main__":
    main()
