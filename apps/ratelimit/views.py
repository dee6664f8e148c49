"""``/metrics``: django-prometheus's export (multiprocess-aware) behind an optional bearer token."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django_prometheus.exports import ExportToDjangoView


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Open when ``METRICS_TOKEN`` is empty (loopback deployments); otherwise that bearer is required."""
    token = settings.METRICS_TOKEN
    if token:
        supplied = request.headers.get("Authorization", "")
        expected = f"Bearer {token}"
        if not hmac.compare_digest(supplied.encode(), expected.encode()):
            response = HttpResponse("metrics need the bearer token\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return ExportToDjangoView(request)
