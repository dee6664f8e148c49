"""The response cache's effect on /v1: wrk against one gateway with the same chat body, three ways.

  python bench/cache_bench.py --url http://127.0.0.1:4000/v1 --key sk-... [--conc 1,32] [--duration 8] [--wrk-cpus 1]

- ``off``: ``cache-control: no-store`` (the cache neither read nor written: the gateway without it);
- ``miss``: ``cache-control: no-cache`` (no lookup, the upstream answers, the answer is written): a miss's cost;
- ``hit``: no header: after the first request every one is answered from the cache (no upstream call).

The key must have caching on (``cache_ttl_seconds``). Prints a markdown table; loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy_bench import CHAT, _loopback

WRK_LUA = """
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"; wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
local control = os.getenv("BENCH_CACHE_CONTROL")
if control and control ~= "" then wrk.headers["Cache-Control"] = control end
function done(s, lat, req)
  io.write(string.format('BENCH_JSON {"rps":%.2f,"p50":%.3f,"p99":%.3f,"non2xx":%d,"errors":%d}\\n',
    s.requests / (s.duration / 1e6), lat:percentile(50) / 1000, lat:percentile(99) / 1000, s.errors.status,
    s.errors.connect + s.errors.read + s.errors.write + s.errors.timeout))
end
"""
MODES = {"off": "no-store", "miss": "no-cache", "hit": ""}


def run(url: str, key: str, mode: str, conc: int, duration: int, cpus: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        body, lua = Path(tmp, "body.json"), Path(tmp, "post.lua")
        body.write_text(json.dumps(CHAT))
        lua.write_text(WRK_LUA)
        command = ["wrk", "-t1", f"-c{conc}", f"-d{duration}s", "--timeout", "30s", "-s", str(lua)]
        command = [*(["taskset", "-c", cpus] if cpus else []), *command, url + "/chat/completions"]
        env = {**os.environ, "BENCH_BODY_FILE": str(body), "BENCH_KEY": key, "BENCH_CACHE_CONTROL": MODES[mode]}
        output = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration + 60).stdout
    line = next((ln for ln in output.splitlines() if ln.startswith("BENCH_JSON ")), None)
    return json.loads(line[len("BENCH_JSON ") :]) if line else {"rps": 0, "error": output[-300:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--conc", default="1,32")
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--wrk-cpus", default="")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    url = _loopback(args.url)
    rows = []
    for conc in [int(c) for c in args.conc.split(",")]:
        for mode in MODES:  # one after the other in every cell
            result = run(url, args.key, mode, conc, args.duration, args.wrk_cpus)
            print(json.dumps({"conc": conc, "mode": mode, **result}), file=sys.stderr)
            rows.append((conc, mode, result))
    print(f"\n{args.label}\n\n| c | mode | req/s | p50 ms | p99 ms | non-2xx |\n|---|---|---:|---:|---:|---:|")
    for conc, mode, r in rows:
        print(
            f"| {conc} | {mode} | {r['rps']:,.0f} | {r.get('p50', 0):.3f} | {r.get('p99', 0):.3f} | {r.get('non2xx')} |"
        )


if __name__ == "__main__":
    main()
