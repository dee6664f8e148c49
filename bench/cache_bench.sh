#!/usr/bin/env bash
# The response cache's bench (bench/cache_bench.py): hit vs miss vs cache off, on the embedded gateway
# (in-process LRU) and on the Redis + Postgres one (the cache in Redis). Everything it starts it stops.
#   bench/cache_bench.sh    # env: GW_CPUS (0) LOAD_CPUS (1) CONCS (1,32) DURATION (8) PHASES ("embedded redis")
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
VENV="${GATEWAY_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
GW_CPUS="${GW_CPUS:-0}"
LOAD_CPUS="${LOAD_CPUS:-1}"
CONCS="${CONCS:-1,32}"
DURATION="${DURATION:-8}"
PHASES="${PHASES:-embedded redis}"
MOCK="${MOCK_UPSTREAM:-$ROOT/../shared/bench/mock_upstream.py}"
[ -f "$MOCK" ] || { echo "mock upstream not found at $MOCK (set MOCK_UPSTREAM)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 2; }

WORK="$(mktemp -d /tmp/gateway-cache-bench.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
SERVICES=""
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  if [ -n "$SERVICES" ]; then services_stop "$SERVICES"; fi
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

bench_gateway() {
  local name="$1" port pid key
  export GATEWAY_RUN_DIR="$WORK/$name" DEBUG=false DJANGO_SETTINGS_MODULE=gateway_project.settings.local
  mkdir -p "$GATEWAY_RUN_DIR"
  "$PY" manage.py migrate --noinput -v 0
  "$PY" manage.py bootstrap_demo --api-base "$MOCK_URL" >/dev/null
  "$PY" manage.py shell -c "from apps.keys.models import VirtualKey; VirtualKey.objects.update(cache_ttl_seconds=3600)"
  port="$(free_port)"
  setsid taskset -c "$GW_CPUS" "$VENV/bin/uvicorn" gateway_project.asgi:application --host 127.0.0.1 --port "$port" \
    --workers 1 --loop uvloop --http httptools --no-access-log --no-server-header --no-proxy-headers --log-level warning \
    >"$WORK/$name.log" 2>&1 < /dev/null &
  pid=$!
  PIDS+=("$pid")
  key="$(cat "$GATEWAY_RUN_DIR/demo_key")"
  wait_http "http://127.0.0.1:$port/health/live"
  "$PY" bench/cache_bench.py --url "http://127.0.0.1:$port/v1" --key "$key" --conc "$CONCS" --duration "$DURATION" \
    --wrk-cpus "$LOAD_CPUS" --label "gateway $name (one uvicorn worker pinned to core $GW_CPUS)"
  kill -TERM -- "-$pid" 2>/dev/null || true
}

for phase in $PHASES; do
  case "$phase" in
    embedded) (unset REDIS_URL DATABASE_URL; bench_gateway embedded) ;;
    redis)
      # shellcheck source=scripts/services.sh
      source scripts/services.sh
      SERVICES="$WORK/services"
      services_start "$SERVICES"
      taskset -p -c "$LOAD_CPUS" "$(cat "$SERVICES/redis/redis.pid")" >/dev/null
      bench_gateway redis
      ;;
    *) echo "unknown phase $phase" >&2; exit 2 ;;
  esac
done
