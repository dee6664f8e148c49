"""Liveness and readiness for load balancers and orchestrators, answered whatever the Host header.

Probes address the process by pod IP or 127.0.0.1 (kubelet, load balancers, the image's HEALTHCHECK),
never by the public host name in ``DJANGO_ALLOWED_HOSTS``. ``ProbeMiddleware`` therefore answers these
exact paths before anything that validates the host (``CommonMiddleware``, ``SecurityMiddleware``'s
HTTPS redirect); every other path keeps the host check. They build no URLs from the Host header.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin

from apps.ratelimit.views import metrics_view

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
    if settings.REDIS_TARGET is None:
        return None
    import redis

    try:
        client = settings.REDIS_TARGET.client(socket_timeout=1, socket_connect_timeout=1)
        client.ping()
        client.close()
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:  # no cluster node answered
        logger.warning("readiness: redis check failed: %s", type(exc).__name__)
        return type(exc).__name__
    return None


def ready(request):
    checks = {"database": _check_database(), "redis": _check_redis() if settings.REDIS_TARGET else "skipped"}
    failed = {name: err for name, err in checks.items() if err not in (None, "skipped")}
    body = {
        "status": "unavailable" if failed else "ok",
        "checks": {name: ("ok" if err is None else err) for name, err in checks.items()},
    }
    return JsonResponse(body, status=503 if failed else 200)


def _metrics(request: HttpRequest) -> HttpResponse | None:
    # Prometheus scrapes by pod IP too. Only with METRICS_TOKEN set: the bearer is what guards the
    # scrape then; without it (the embedded default, loopback) the host check stays, against DNS rebinding.
    if not settings.METRICS_TOKEN:
        return None
    return metrics_view(request)


PROBES = {"/health/live": live, "/health/ready": ready, "/metrics": _metrics}


class ProbeMiddleware(MiddlewareMixin):
    """First in ``MIDDLEWARE``: the probe paths are answered before the host check and HTTPS redirect."""

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        view = PROBES.get(request.path_info)
        return view(request) if view is not None else None
