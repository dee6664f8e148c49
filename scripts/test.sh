#!/usr/bin/env bash
# The whole test suite, from a fresh machine: venv, dependencies, Postgres + Redis on loopback,
# Chromium for the browser tests, pytest, then everything stopped again.
#   scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
VENV="${GATEWAY_VENV:-$ROOT/.venv}"

if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
if ! cmp -s requirements/dev.txt "$VENV/.installed-dev.txt" 2>/dev/null || ! cmp -s requirements/base.txt "$VENV/.installed-base.txt" 2>/dev/null; then
  # dev.txt is the complete, hashed closure of base.in + dev.in (see scripts/lock.sh): nothing unlisted
  # or tampered with gets in. Packages an older venv already has at the locked version are kept.
  echo "installing requirements/dev.txt into $VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes -r requirements/dev.txt
  cp requirements/dev.txt "$VENV/.installed-dev.txt"
  cp requirements/base.txt "$VENV/.installed-base.txt"
fi

# Browser tests drive Debian's Chromium (Playwright cannot download its own browser here).
if ! command -v chromium >/dev/null; then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null \
    || echo "chromium could not be installed; browser tests will fail" >&2
fi

# The JS SDK tests (tests/e2e/test_sdk_js.py) run the official `openai` npm package, pinned in package-lock.json.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq nodejs npm >/dev/null \
    || echo "node/npm could not be installed; JS SDK tests will fail" >&2
fi
JS_DIR=tests/e2e/js
if command -v npm >/dev/null && { [ ! -f "$JS_DIR/node_modules/.package-lock.json" ] \
  || [ "$JS_DIR/package-lock.json" -nt "$JS_DIR/node_modules/.package-lock.json" ]; }; then
  (cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
    || echo "npm ci failed in $JS_DIR; JS SDK tests will fail" >&2
fi

# shellcheck source=scripts/services.sh
source scripts/services.sh
SERVICES_DIR="$(mktemp -d /tmp/gateway-test.XXXXXX)"
trap 'services_stop "$SERVICES_DIR"; rm -rf "$SERVICES_DIR"' EXIT
trap 'exit 130' INT TERM HUP  # so the EXIT trap also runs when the run is interrupted
services_start "$SERVICES_DIR"

export DJANGO_SETTINGS_MODULE=gateway_project.settings.test
export GATEWAY_RUN_DIR="$SERVICES_DIR/run"
export PATH="$VENV/bin:$PATH"

# The full run (no arguments, as CI does it) also lints and checks migrations; targeted runs skip that.
if [ $# -eq 0 ]; then
  "$VENV/bin/ruff" check .
  "$VENV/bin/python" manage.py makemigrations --check --dry-run >/dev/null
  # Known vulnerabilities in the runtime lock: a printed report, never a failure (see docs/operations.md).
  GATEWAY_VENV="$VENV" scripts/audit.sh || true
fi
"$VENV/bin/python" -m pytest "$@"
