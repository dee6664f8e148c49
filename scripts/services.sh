#!/usr/bin/env bash
# Start/stop throwaway Postgres and Redis servers on loopback for the test suite and benchmarks.
#   source scripts/services.sh; services_start DIR   -> exports DATABASE_URL, REDIS_URL
#   services_stop DIR
# Installs the servers with apt when they are missing. Everything lives under DIR.
set -euo pipefail

_free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

_pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && { echo "$d"; return; }; done
  command -v pg_ctl >/dev/null && dirname "$(command -v pg_ctl)"
}

services_install() {
  local need=()
  [ -n "$(_pg_bin)" ] || need+=(postgresql)
  command -v redis-server >/dev/null || need+=(redis-server)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} with apt" >&2
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# Postgres refuses to run as root: run it as the postgres user when we are root.
_as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Servers of earlier runs that died without cleaning up (killed shells never run their EXIT trap).
services_sweep_stale() {
  local old owner
  for old in /tmp/gateway-test.*; do
    [ -f "$old/owner_pid" ] || continue
    owner="$(cat "$old/owner_pid")"
    if ! kill -0 "$owner" 2>/dev/null; then
      services_stop "$old"
      rm -rf "$old"
    fi
  done
}

services_start() {
  local dir="$1" pgbin pg_port redis_port
  services_install
  services_sweep_stale
  pgbin="$(_pg_bin)"
  mkdir -p "$dir"
  chmod 755 "$dir"
  echo "${SERVICES_OWNER_PID:-$$}" > "$dir/owner_pid"
  mkdir -p "$dir/pg" "$dir/redis"
  [ "$(id -u)" -eq 0 ] && chown postgres "$dir/pg"
  pg_port="$(_free_port)"
  redis_port="$(_free_port)"
  _as_pg "$pgbin/initdb" -D "$dir/pg/data" -U gateway --auth=trust -E UTF8 >/dev/null
  _as_pg "$pgbin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/log" -w -t 60 \
    -o "-h 127.0.0.1 -p $pg_port -k $dir/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" start >/dev/null
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$dir/redis/redis.pid" --logfile "$dir/redis/log" --dir "$dir/redis"
  for _ in $(seq 1 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  export DATABASE_URL="postgres://gateway@127.0.0.1:$pg_port/postgres"
  export REDIS_URL="redis://127.0.0.1:$redis_port/0"
  echo "$pg_port" > "$dir/pg_port"
  echo "$redis_port" > "$dir/redis_port"
  echo "postgres on 127.0.0.1:$pg_port, redis on 127.0.0.1:$redis_port (under $dir)" >&2
}

services_stop() {
  local dir="$1" pgbin
  pgbin="$(_pg_bin)"
  if [ -f "$dir/redis/redis.pid" ]; then kill "$(cat "$dir/redis/redis.pid")" 2>/dev/null || true; fi
  if [ -d "$dir/pg/data" ]; then _as_pg "$pgbin/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null 2>&1 || true; fi
}
