"""Beat for the embedded default (no Redis, no beat process): the outbox thread runs the periodic jobs.

Only without ``REDIS_URL``. Every job is safe to run from several processes at once (alerts and
report runs are UNIQUE per window/period, retention and window roll are idempotent), so each uvicorn
worker may run them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


def _roll() -> None:
    from apps.spend.services import budget_windows_roll

    budget_windows_roll()


def _alerts() -> None:
    from apps.spend.services import budget_alerts_send

    budget_alerts_send()


def _retention() -> None:
    from apps.spend.services import spend_logs_purge

    spend_logs_purge()


def _reports() -> None:
    from apps.spend.reports import reports_run_due

    reports_run_due()


JOBS: list[tuple[str, float, Callable[[], None]]] = [
    ("roll budget windows", 60.0, _roll),
    ("budget alerts", 60.0, _alerts),
    ("scheduled reports", 3600.0, _reports),
    ("retention", 86400.0, _retention),
]


class EmbeddedBeat:
    def __init__(self) -> None:
        self.last_run: dict[str, float] = {}

    def tick(self, now: float | None = None) -> list[str]:
        """Run the jobs that are due; returns their names. Failures are logged, never raised."""
        now = time.monotonic() if now is None else now
        ran = []
        for name, every, job in JOBS:
            if now - self.last_run.get(name, float("-inf")) < every:
                continue
            self.last_run[name] = now
            try:
                job()
                ran.append(name)
            except Exception:
                logger.exception("embedded beat: %s failed", name)
                from django.db import connection

                connection.close()  # the next job starts from a fresh connection
        return ran
