"""Beat for the embedded default (no Redis, no beat process): the outbox thread runs the periodic jobs.

Only without ``REDIS_URL``. Every job is safe to run from several processes at once (alerts and
report runs are UNIQUE per window/period, retention and window roll are idempotent, probes overwrite
one row per deployment), so each uvicorn worker may run them. Apps above spend add theirs as their
AppConfig's ``embedded_jobs`` (apps/monitoring: deployment probes, alerts), collected without importing them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.apps import apps
from django.db import connection

from apps.spend.reports import reports_run_due
from apps.spend.services import budget_alerts_send, budget_windows_roll, spend_logs_purge

logger = logging.getLogger(__name__)

JOBS: list[tuple[str, float, Callable[[], object]]] = [
    ("roll budget windows", 60.0, budget_windows_roll),
    ("budget alerts", 60.0, budget_alerts_send),
    ("scheduled reports", 3600.0, reports_run_due),
    ("retention", 86400.0, spend_logs_purge),
]


class EmbeddedBeat:
    def __init__(self) -> None:
        self.last_run: dict[str, float] = {}
        self.jobs = list(JOBS)
        # The other apps' jobs (probes call every deployment) wait one interval after the process starts
        # instead of all running at once in every worker that boots.
        self.delayed: list[str] = []
        for config in apps.get_app_configs():
            extra = getattr(config, "embedded_jobs", None) or []
            self.jobs.extend(extra)
            self.delayed.extend(name for name, _every, _job in extra)

    def tick(self, now: float | None = None) -> list[str]:
        """Run the jobs that are due; returns their names. Failures are logged, never raised."""
        now = time.monotonic() if now is None else now
        while self.delayed:
            self.last_run[self.delayed.pop()] = now
        ran = []
        for name, every, job in self.jobs:
            if now - self.last_run.get(name, float("-inf")) < every:
                continue
            self.last_run[name] = now
            try:
                job()
                ran.append(name)
            except Exception:
                logger.exception("embedded beat: %s failed", name)
                connection.close()  # the next job starts from a fresh connection
        return ran
