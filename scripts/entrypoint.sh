#!/usr/bin/env bash
# Container entrypoint: the first argument picks the process.
set -euo pipefail
rm -rf "${PROMETHEUS_MULTIPROC_DIR:-/tmp/prometheus}" && mkdir -p "${PROMETHEUS_MULTIPROC_DIR:-/tmp/prometheus}"
case "${1:-web}" in
  web)
    # Check the settings once here: with --workers N every worker would print the same refusal and
    # uvicorn's supervisor would then exit 0; this way there is one message and a failing status.
    python -c 'from django.conf import settings; settings.INSTALLED_APPS'
    exec uvicorn gateway_project.asgi:application --host 0.0.0.0 --port "${PORT:-4000}" \
      --workers "${WEB_CONCURRENCY:-2}" --loop uvloop --http httptools --no-access-log --no-server-header --proxy-headers ;;
  worker)
    exec celery -A gateway_project worker --loglevel "${LOG_LEVEL:-INFO}" --concurrency "${CELERY_CONCURRENCY:-2}" ;;
  beat)
    exec celery -A gateway_project beat --loglevel "${LOG_LEVEL:-INFO}" \
      --scheduler django_celery_beat.schedulers:DatabaseScheduler ;;
  migrate)
    exec python manage.py migrate --noinput ;;
  *)
    exec "$@" ;;
esac
