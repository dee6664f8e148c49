"""The REST API's default paging (its own module: DRF imports it from settings while building its views)."""

from __future__ import annotations

from rest_framework import pagination


class BoundedLimitOffsetPagination(pagination.LimitOffsetPagination):
    """DRF's limit/offset paging with both bounded: an unbounded ``?limit=`` or ``?offset=`` reaches the
    database as a LIMIT/OFFSET beyond bigint (a 500), and a huge page is a cheap way to load the server."""

    max_limit = 1000
    max_offset = 10**12  # beyond any table here: the page is simply empty

    def get_offset(self, request) -> int:
        return min(super().get_offset(request), self.max_offset)
