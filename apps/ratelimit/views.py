"""``/metrics``: django-prometheus's export (multiprocess-aware), for the platform operator only.

The scrape names every tenant's teams, key aliases, private model names, spend and remaining limits,
so no tenant may read it. With ``METRICS_TOKEN`` set (production requires it) the bearer is needed;
without it (the embedded default) only a client on this machine's loopback gets an answer.
"""

from __future__ import annotations

import hmac
from ipaddress import ip_address

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django_prometheus.exports import ExportToDjangoView


def _from_loopback(request: HttpRequest) -> bool:
    # The socket's peer (uvicorn rewrites it from X-Forwarded-For only for proxies it trusts, by
    # default 127.0.0.1): a client that came through a proxy from elsewhere is not loopback.
    try:
        return ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.METRICS_TOKEN
    if token:
        supplied = request.headers.get("Authorization", "")
        expected = f"Bearer {token}"
        if not hmac.compare_digest(supplied.encode(), expected.encode()):
            response = HttpResponse("metrics need the bearer token\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    elif not _from_loopback(request):
        return HttpResponse(
            "metrics are served to loopback clients only; set METRICS_TOKEN to scrape from elsewhere\n",
            status=403,
            content_type="text/plain",
        )
    return ExportToDjangoView(request)
