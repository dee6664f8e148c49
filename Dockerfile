# One image for every process: `web` (default), `worker`, `beat`, `migrate` or any command.
#   docker build -t llm-gateway .
#   docker run -e DATABASE_URL=... -e REDIS_URL=... -e DJANGO_SECRET_KEY=... -e GATEWAY_SECRET_KEY=... \
#              -e GATEWAY_MASTER_KEY=... -e METRICS_TOKEN=... -e DJANGO_ALLOWED_HOSTS=gw.example.com \
#              -p 4000:4000 llm-gateway web
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=gateway_project.settings.production \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    PORT=4000 \
    WEB_CONCURRENCY=2

WORKDIR /app
COPY requirements/ requirements/
# The lock is the complete closure with every file's hash: --no-deps so nothing unlisted gets in.
RUN pip install --no-deps --require-hashes -r requirements/base.txt

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gateway
COPY --chown=gateway:gateway . .

# collectstatic needs settings but no database: build-time placeholders, never used at run time.
RUN DJANGO_SETTINGS_MODULE=gateway_project.settings.local GATEWAY_RUN_DIR=/tmp/build-run \
    python manage.py collectstatic --noinput -v 0 && rm -rf /tmp/build-run

USER gateway
EXPOSE 4000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,os;urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health/live')"
ENTRYPOINT ["scripts/entrypoint.sh"]
CMD ["web"]
