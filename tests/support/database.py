"""Helpers for tests whose servers share the test database with pytest."""

from __future__ import annotations

import time


def wait_for_other_sessions_to_end(timeout: float = 10.0) -> None:
    """Postgres ends a stopped server's backends asynchronously; the test database is dropped after us."""
    from django.db import connection  # after pytest-django has set Django up

    deadline = time.monotonic() + timeout
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(query)
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.1)
