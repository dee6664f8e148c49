#!/usr/bin/env bash
# Overload benchmark: one gateway worker (embedded default) offered FACTOR x its capacity, open loop,
# with overload shedding on (PROXY_SHED_LOOP_LAG_MS=$SHED_MS) and off (0).
#
#   bench/overload.sh        # env: GW_CPUS (0) LOAD_CPUS (1) FACTOR (2) DURATION (20) SHED_MS (50) CAPACITY (measure)
#
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

# start_gateway SHED_MS -> GW_URL, GW_PID (one uvicorn worker pinned to $GW_CPUS)
start_gateway() {
  local port
  port="$(free_port)"
  PROXY_SHED_LOOP_LAG_MS="$1" setsid taskset -c "$GW_CPUS" "$VENV/bin/uvicorn" gateway_project.asgi:application \
    --host 127.0.0.1 --port "$port" --workers 1 --loop uvloop --http httptools --no-access-log --no-server-header \
    --no-proxy-headers --log-level warning --backlog 8192 >"$WORK/gw-$1.log" 2>&1 < /dev/null &
  GW_PID=$!
  PIDS+=("$GW_PID")
  GW_URL="http://127.0.0.1:$port/v1"
  wait_http "http://127.0.0.1:$port/health/live"
  curl -sf -o /dev/null -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"warm up"}]}' "$GW_URL/chat/completions"
}
stop_gateway() { kill -TERM -- "-$GW_PID" 2>/dev/null || true; sleep 2; kill -KILL -- "-$GW_PID" 2>/dev/null || true; }

if [ -z "${CAPACITY:-}" ]; then
  start_gateway "$SHED_MS"
  cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
LUA
  CAPACITY="$(taskset -c "$LOAD_CPUS" wrk -t1 -c32 -d10s -s "$WORK/post.lua" "$GW_URL/chat/completions" \
    | awk '/Requests\/sec/ {printf "%d", $2}')"
  stop_gateway
fi
RATE=$(( CAPACITY * FACTOR ))
echo "capacity (wrk c=32, closed loop): $CAPACITY req/s; offering $RATE req/s open loop for $DURATION s" >&2

for shed in "$SHED_MS" 0; do
  start_gateway "$shed"
  result="$(taskset -c "$LOAD_CPUS" "$PY" bench/openloop.py --url "$GW_URL/chat/completions" --key "$KEY" \
    --rate "$RATE" --duration "$DURATION")"
  echo "{\"shed_ms\": $shed, \"capacity_rps\": $CAPACITY, \"result\": $result}"
  stop_gateway
done
