#!/usr/bin/env bash
# Overload benchmark: one gateway worker (embedded default) offered FACTOR x its capacity, open loop,
# with overload shedding on (PROXY_SHED_LOOP_LAG_MS=$SHED_MS) and off (0).
#
#   bench/overload.sh        # env: GW_CPUS (0) LOAD_CPUS (1) FACTOR (2) DURATION (20) SHED_MS (50) CAPACITY (measure)
#                            #      VARIANTS ("$SHED_MS,httptools 0,httptools"): runs of "shed_ms,uvicorn --http"
#
# Each run also reports the gateway's CPU per 503 (the CPU left after the served requests, at the closed-loop
# cost each) and a model of the goodput on a core of its own: steadier than wall-clock rates on a shared machine.
# Capacity is wrk's closed-loop req/s at c=32 (10 s) with shedding on; then bench/openloop.py sends
# FACTOR x that many arrivals per second for DURATION s over 2,000 keep-alive connections (a load balancer's
# pool) against each gateway in turn (fresh process each) and prints goodput (200/s, and within 1 s),
# shed (503/s), timeouts and the p50/p99 of the answered requests.
# Everything it starts it stops; loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
VENV="${GATEWAY_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
GW_CPUS="${GW_CPUS:-0}"
LOAD_CPUS="${LOAD_CPUS:-1}"
FACTOR="${FACTOR:-2}"
DURATION="${DURATION:-20}"
SHED_MS="${SHED_MS:-50}"
VARIANTS="${VARIANTS:-$SHED_MS,httptools 0,httptools}"
MOCK="${MOCK_UPSTREAM:-$ROOT/../shared/bench/mock_upstream.py}"
[ -f "$MOCK" ] || { echo "mock upstream not found at $MOCK (set MOCK_UPSTREAM)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)"

WORK="$(mktemp -d /tmp/gateway-overload.XXXXXX)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { "$PY" -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 1 200); do curl -sf -o /dev/null --max-time 2 "$1" && return 0; sleep 0.25; done
  echo "timed out waiting for $1" >&2; return 1
}

MOCK_PORT="$(free_port)"
setsid taskset -c "$LOAD_CPUS" "$PY" "$MOCK" --port "$MOCK_PORT" --workers 1 >"$WORK/mock.log" 2>&1 < /dev/null &
PIDS+=($!)
MOCK_URL="http://127.0.0.1:$MOCK_PORT/v1"
wait_http "$MOCK_URL/models"

export GATEWAY_RUN_DIR="$WORK/run" DEBUG=false DJANGO_SETTINGS_MODULE=gateway_project.settings.local
unset REDIS_URL DATABASE_URL
mkdir -p "$GATEWAY_RUN_DIR"
"$PY" manage.py migrate --noinput -v 0
"$PY" manage.py bootstrap_demo --api-base "$MOCK_URL" >/dev/null
KEY="$(cat "$GATEWAY_RUN_DIR/demo_key")"

# start_gateway SHED_MS HTTP -> GW_URL, GW_PID (one uvicorn worker pinned to $GW_CPUS)
start_gateway() {
  local port
  port="$(free_port)"
  PROXY_SHED_LOOP_LAG_MS="$1" setsid taskset -c "$GW_CPUS" "$VENV/bin/uvicorn" gateway_project.asgi:application \
    --host 127.0.0.1 --port "$port" --workers 1 --loop uvloop --http "$2" --no-access-log --no-server-header \
    --no-proxy-headers --log-level warning --backlog 8192 >"$WORK/gw-$1.log" 2>&1 < /dev/null &
  GW_PID=$!
  PIDS+=("$GW_PID")
  GW_URL="http://127.0.0.1:$port/v1"
  wait_http "http://127.0.0.1:$port/health/live"
  curl -sf -o /dev/null -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"warm up"}]}' "$GW_URL/chat/completions"
}
# CPU seconds (user + system) the gateway process has used: on a shared machine the wall-clock rates above
# depend on what else runs, the CPU each kind of answer costs does not (much).
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$GW_PID/stat"; }
stop_gateway() { kill -TERM -- "-$GW_PID" 2>/dev/null || true; sleep 2; kill -KILL -- "-$GW_PID" 2>/dev/null || true; }

if [ -z "${CAPACITY:-}" ]; then
  start_gateway "$SHED_MS" httptools
  cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
LUA
  cpu0="$(cpu_seconds)"
  taskset -c "$LOAD_CPUS" wrk -t1 -c32 -d10s -s "$WORK/post.lua" "$GW_URL/chat/completions" >"$WORK/wrk.txt"
  CAPACITY="$(awk '/Requests\/sec/ {printf "%d", $2}' "$WORK/wrk.txt")"
  # CPU per served request (closed loop, nothing shed), in microseconds.
  SERVED_CPU_US="$(awk -v c0="$cpu0" -v c1="$(cpu_seconds)" '/requests in/ {printf "%.0f", (c1 - c0) * 1e6 / $1}' \
    "$WORK/wrk.txt")"
  stop_gateway
fi
SERVED_CPU_US="${SERVED_CPU_US:-0}"
RATE=$(( CAPACITY * FACTOR ))
echo "capacity (wrk c=32, closed loop): $CAPACITY req/s ($SERVED_CPU_US us of CPU per request);" \
  "offering $RATE req/s open loop for $DURATION s" >&2

for variant in $VARIANTS; do
  shed="${variant%%,*}" http="${variant#*,}"
  start_gateway "$shed" "$http"
  cpu0="$(cpu_seconds)"
  result="$(taskset -c "$LOAD_CPUS" "$PY" bench/openloop.py --url "$GW_URL/chat/completions" --key "$KEY" \
    --rate "$RATE" --duration "$DURATION")"
  cpu="$(awk -v c0="$cpu0" -v c1="$(cpu_seconds)" 'BEGIN {printf "%.2f", c1 - c0}')"
  # shed_cpu_us: the CPU left after the served requests (at the closed-loop cost each) per 503.
  # goodput_model_rps: what the worker would serve at this offered rate on a core of its own
  # (served x served cost + shed x shed cost = 1 s per s), i.e. without the machine's other load.
  RESULT="$result" CPU="$cpu" SERVED_US="$SERVED_CPU_US" "$PY" - "$shed" "$http" "$CAPACITY" <<'PY'
import json, os, sys
r, cpu, served_us = json.loads(os.environ["RESULT"]), float(os.environ["CPU"]), float(os.environ["SERVED_US"])
ok = sum(n for s, n in r["statuses"].items() if s.startswith("2"))
shed = r["statuses"].get("503", 0)
out = {"shed_ms": int(sys.argv[1]), "http": sys.argv[2], "capacity_rps": int(sys.argv[3]), "gateway_cpu_s": cpu}
if served_us and shed:
    shed_us = max(0.0, (cpu * 1e6 - ok * served_us) / shed)
    rate = r["offered_rps"]
    out["served_cpu_us"], out["shed_cpu_us"] = served_us, round(shed_us, 1)
    out["goodput_model_rps"] = round(min(rate, 1e6 / served_us, (1e6 - rate * shed_us) / (served_us - shed_us)))
print(json.dumps({**out, "result": r}))
PY
  stop_gateway
done
