#!/usr/bin/env bash
# Run the gateway in its embedded default: SQLite, in-process limits, eager Celery, the mock provider,
# a demo admin/key. Serves on 127.0.0.1:${PORT:-4000}.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GATEWAY_VENV:-.venv}"
PORT="${PORT:-4000}"
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-gateway_project.settings.local}"

if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV"; fi
if ! cmp -s requirements/base.txt "$VENV/.installed-base.txt" 2>/dev/null; then
  "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes -r requirements/base.txt
  cp requirements/base.txt "$VENV/.installed-base.txt"
fi
"$VENV/bin/python" manage.py migrate --noinput -v 0
"$VENV/bin/python" manage.py collectstatic --noinput -v 0
"$VENV/bin/python" manage.py bootstrap_demo | sed "s/{port}/$PORT/"
echo "  try: curl http://127.0.0.1:$PORT/v1/chat/completions -H \"Authorization: Bearer \$(cat .run/demo_key)\" -H 'content-type: application/json' -d '{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
exec "$VENV/bin/uvicorn" gateway_project.asgi:application --host 127.0.0.1 --port "$PORT" \
  --workers "${WEB_CONCURRENCY:-1}" --loop uvloop --http httptools --no-access-log --no-server-header --no-proxy-headers
