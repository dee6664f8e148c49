#!/usr/bin/env bash
# The /v1 proxy benchmark on this machine, everything loopback, everything it starts it stops.
#
#   bench/run.sh            # direct-to-mock baseline, gateway embedded default, gateway with Redis+Postgres
#
# One uvicorn worker per gateway pinned to $GW_CPUS (default core 0); the mock upstream, wrk and Redis
# share $LOAD_CPUS (default core 1). Non-streaming chat at c=$CONCS for $DURATION s per cell (targets
# take turns in every cell), then sequential streaming TTFT; peak RSS of each gateway process.
# Env: GW_CPUS LOAD_CPUS CONCS (1,8,32,64) DURATION (10) TTFT_N (200) MOCK_UPSTREAM (path) PHASES ("embedded redis")
# PHASES may add "traced": the embedded gateway with OpenTelemetry on at sampling 1.0, exporting every span
# over OTLP/HTTP to a local receiver process (tests/support/otlp_receiver.py, counting) on $LOAD_CPUS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
VENV="${GATEWAY_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
GW_CPUS="${GW_CPUS:-0}"
LOAD_CPUS="${LOAD_CPUS:-1}"
CONCS="${CONCS:-1,8,32,64}"
DURATION="${DURATION:-10}"
TTFT_N="${TTFT_N:-200}"
PHASES="${PHASES:-embedded redis}"
MOCK="${MOCK_UPSTREAM:-$ROOT/../shared/bench/mock_upstream.py}"
[ -f "$MOCK" ] || { echo "mock upstream not found at $MOCK (set MOCK_UPSTREAM)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 2; }

WORK="$(mktemp -d /tmp/gateway-bench.XXXXXX)"
chmod 755 "$WORK"  # the Postgres server (its own user when we are root) lives under it
PIDS=()
SERVICES=""
cleanup() {
  local all=("${PIDS[@]}")
  [ -f "$WORK/pids" ] && mapfile -t -O "${#all[@]}" all < "$WORK/pids"
  for pid in "${all[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${all[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
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

# gateway NAME -> starts one pinned uvicorn worker with the current environment; sets GW_URL GW_KEY GW_PID
gateway() {
  local name="$1" port
  export GATEWAY_RUN_DIR="$WORK/$name" DEBUG=false DJANGO_SETTINGS_MODULE=gateway_project.settings.local
  mkdir -p "$GATEWAY_RUN_DIR"
  "$PY" manage.py migrate --noinput -v 0
  "$PY" manage.py bootstrap_demo --api-base "$MOCK_URL" >/dev/null
  port="$(free_port)"
  setsid taskset -c "$GW_CPUS" "$VENV/bin/uvicorn" gateway_project.asgi:application --host 127.0.0.1 --port "$port" \
    --workers 1 --loop uvloop --http httptools --no-access-log --no-server-header --no-proxy-headers --log-level warning \
    >"$WORK/$name.log" 2>&1 < /dev/null &
  GW_PID=$!
  echo "$GW_PID" >> "$WORK/pids"
  GW_URL="http://127.0.0.1:$port/v1"
  GW_KEY="$(cat "$GATEWAY_RUN_DIR/demo_key")"
  wait_http "http://127.0.0.1:$port/health/live"
  curl -sf -o /dev/null -H "Authorization: Bearer $GW_KEY" -H 'content-type: application/json' \
    -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"warm up"}]}' "$GW_URL/chat/completions" \
    || { echo "gateway $name does not answer; log:" >&2; tail -30 "$WORK/$name.log" >&2; exit 1; }
}

ARGS=(--target "direct=$MOCK_URL")
for phase in $PHASES; do
  case "$phase" in
    embedded)
      (unset REDIS_URL DATABASE_URL; gateway embedded; echo "$GW_URL $GW_KEY $GW_PID" > "$WORK/embedded.env")
      ;;
    traced)
      OTLP_PORT="$(free_port)"
      setsid taskset -c "$LOAD_CPUS" "$PY" tests/support/otlp_receiver.py "$OTLP_PORT" "$(free_port)" count \
        >"$WORK/otlp.log" 2>&1 < /dev/null &
      PIDS+=($!)
      wait_http "http://127.0.0.1:$OTLP_PORT/health"
      (unset REDIS_URL DATABASE_URL; export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT"
       gateway traced; echo "$GW_URL $GW_KEY $GW_PID" > "$WORK/traced.env")
      ;;
    redis)
      # shellcheck source=scripts/services.sh
      source scripts/services.sh
      SERVICES="$WORK/services"
      services_start "$SERVICES"
      taskset -p -c "$LOAD_CPUS" "$(cat "$SERVICES/redis/redis.pid")" >/dev/null
      (gateway redis; echo "$GW_URL $GW_KEY $GW_PID" > "$WORK/redis.env")
      ;;
    *) echo "unknown phase $phase" >&2; exit 2 ;;
  esac
  read -r url key pid < "$WORK/$phase.env"
  ARGS+=(--target "gateway-$phase=$url" --key "gateway-$phase=$key" --rss-pid "gateway-$phase=$pid")
done

echo "mock: $MOCK; gateway cores: $GW_CPUS; load (wrk, mock, redis) cores: $LOAD_CPUS; $(nproc) cores" >&2
"$PY" bench/proxy_bench.py "${ARGS[@]}" --conc "$CONCS" --duration "$DURATION" --ttft-n "$TTFT_N" \
  --wrk-cpus "$LOAD_CPUS" --label "(one uvicorn worker pinned to core $GW_CPUS)"
if [ -n "${OTLP_PORT:-}" ]; then
  echo "spans received by the OTLP receiver: $(curl -sf "http://127.0.0.1:$OTLP_PORT/count")" >&2
fi
