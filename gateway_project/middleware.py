"""Request hygiene for the Django side (admin, REST API, LiteLLM-compatible routes).

A NUL byte can reach a view through the URL (``/api/v1/spend/logs/%00/``) or the query string; Postgres
text cannot hold one, so the first lookup with it would fail as a 500. Refused here, once, as a 400
for every route, instead of in each view that turns a URL part into a query.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.utils.deprecation import MiddlewareMixin


class RejectNulMiddleware(MiddlewareMixin):
    def process_request(self, request: HttpRequest) -> JsonResponse | None:
        query = request.GET.lists()
        if "\x00" in request.path or any("\x00" in key or any("\x00" in v for v in vs) for key, vs in query):
            return JsonResponse({"detail": "NUL bytes are not allowed in the URL."}, status=400)
        return None
