#!/usr/bin/env bash
# Run the gateway in its embedded default: SQLite, in-process limits, eager Celery, the mock provider,
# a demo admin/key. Serves on 127.0.0.1:${PORT:-4000}.
# One line per step, so the first run's install is not a silent minute; "ready at URL" once the server
# answers /health/ready. In the background (`scripts/run.sh &`), `scripts/wait-ready.sh --pid $!`
# waits for the same moment. GATEWAY_VENV picks the venv (default .venv; reused when its installed
# lock matches requirements/base.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GATEWAY_VENV:-.venv}"
PORT="${PORT:-4000}"
URL="http://127.0.0.1:$PORT"
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-gateway_project.settings.local}"
step() { echo "[run.sh] $*"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating the virtualenv $VENV"
  python3 -m venv "$VENV"
fi
if ! cmp -s requirements/base.txt "$VENV/.installed-base.txt" 2>/dev/null; then
  step "installing requirements/base.txt into $VENV (the first time takes a minute or two)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes -r requirements/base.txt
  cp requirements/base.txt "$VENV/.installed-base.txt"
fi
step "migrating the database"
"$VENV/bin/python" manage.py migrate --noinput -v 0
step "collecting static files"
"$VENV/bin/python" manage.py collectstatic --noinput -v 0
step "creating the demo tenant"
"$VENV/bin/python" manage.py bootstrap_demo | sed "s/{port}/$PORT/"
echo "  try: curl $URL/v1/chat/completions -H \"Authorization: Bearer \$(cat .run/demo_key)\" -H 'content-type: application/json' -d '{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
step "starting the server on $URL"
# $$ stays this process's id across the exec below: the watcher reports "ready" only for our server.
( WAIT_READY_TIMEOUT=120 scripts/wait-ready.sh --pid $$ "$URL" 2>/dev/null && step "ready at $URL/" ) &
exec "$VENV/bin/uvicorn" gateway_project.asgi:application --host 127.0.0.1 --port "$PORT" \
  --workers "${WEB_CONCURRENCY:-1}" --loop uvloop --http httptools --no-access-log --no-server-header --no-proxy-headers
