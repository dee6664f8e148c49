"""The embedded default's ledger on SQLite: the same exactly-once ingestion as on Postgres.

The suite's database is Postgres, so this runs the SQLite path in a child process with its own
SQLite file: replays and overlapping batches must record each request once, with exact totals.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json
from apps.spend.ingest import spend_ingest_events
from apps.spend.models import DailySpend, SpendLog
from django.db.models import Sum
from tests.factories import SpendEventFactory

def event(i):
    return SpendEventFactory(
        request_id=f"req-{i}", status=200 if i % 7 else 502, llm_provider="mock", organization_id=1, team_id=1,
        key_id=1 + i % 3, key_alias="k", prompt_tokens=10, completion_tokens=20, cost="0.0000012345",
        metadata={"attempts": [{"status": 200}]},
    )

events = [event(i) for i in range(350)]
first = [spend_ingest_events(events[i:i + 100]).inserted for i in range(0, 300, 100)]
replayed = [spend_ingest_events(events[i:i + 100]).inserted for i in range(0, 300, 100)]
overlap = spend_ingest_events(events[250:350]).inserted
print(json.dumps({
    "first": first, "replayed": replayed, "overlap": overlap,
    "rows": SpendLog.objects.count(),
    "ledger_cost": str(SpendLog.objects.aggregate(s=Sum("cost"))["s"]),
    "daily_requests": DailySpend.objects.aggregate(s=Sum("requests"))["s"],
    "daily_errors": DailySpend.objects.aggregate(s=Sum("errors"))["s"],
    "metadata_ok": SpendLog.objects.filter(metadata__has_key="attempts").count(),
}))
"""


def _manage(args, env):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_sqlite_ledger_records_each_request_once_with_exact_totals(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="gateway_project.settings.local",
        GATEWAY_RUN_DIR=str(tmp_path),
        DATABASE_URL=f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
    )
    migrated = _manage(["migrate", "-v", "0"], env)
    assert migrated.returncode == 0, migrated.stderr
    result = _manage(["shell", "-c", SCRIPT], env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["first"] == [100, 100, 100]
    assert report["replayed"] == [0, 0, 0]
    assert report["overlap"] == 50
    assert report["rows"] == 350
    assert report["daily_requests"] == 350
    assert report["daily_errors"] == len([i for i in range(350) if i % 7 == 0])
    assert abs(float(report["ledger_cost"]) - 350 * 0.0000012345) < 1e-12
    assert report["metadata_ok"] == 350
