"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import JsonResponse

logger = logging.getLogger(__name__)


def live(request):
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not ready"
        logger.warning("readiness: database check failed: %s", type(exc).__name__)
        return type(exc).__name__
    return None


def _check_redis() -> str | None:
    if not settings.REDIS_URL:
        return None
    import redis

    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        logger.warning("readiness: redis check failed: %s", type(exc).__name__)
        return type(exc).__name__
    return None


def ready(request):
    checks = {"database": _check_database(), "redis": _check_redis() if settings.REDIS_URL else "skipped"}
    failed = {name: err for name, err in checks.items() if err not in (None, "skipped")}
    body = {
        "status": "unavailable" if failed else "ok",
        "checks": {name: ("ok" if err is None else err) for name, err in checks.items()},
    }
    return JsonResponse(body, status=503 if failed else 200)
