"""Spend ingestion throughput: events/s from the Redis outbox stream into Postgres (ledger + aggregates).

    .venv/bin/python bench/ingest_bench.py [--events 50000] [--batch 500] [--keys 50]

Without DATABASE_URL/REDIS_URL it starts throwaway Postgres + Redis with scripts/services.sh and a
fresh database. Emits the events with spend_emit's stream format (pipelined XADDs, not timed), then
times ``stream_drain`` in one process: one consumer, one transaction per batch, XACK after commit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def relaunch_with_services() -> int:
    workdir = tempfile.mkdtemp(prefix="ingest-bench-")
    script = (
        f"source scripts/services.sh; services_start {workdir} >&2; "
        f"trap 'services_stop {workdir}' EXIT; "
        f'"{sys.executable}" bench/ingest_bench.py "$@"'
    )
    return subprocess.call(["bash", "-c", script, "bench", *sys.argv[1:]], cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--keys", type=int, default=50)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings.test")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from apps.keys.models import VirtualKey
    from apps.spend.events import SpendEvent
    from apps.spend.models import BudgetWindow, DailySpend, SpendLog
    from apps.spend.outbox import STREAM_FIELD, STREAM_KEY
    from apps.spend.stream import redis_client, stream_drain
    from apps.teams.models import Organization, Team

    call_command("migrate", verbosity=0)
    org = Organization.objects.create(name=f"bench-{uuid.uuid4().hex[:6]}", time_zone="Europe/Berlin")
    teams = [Team.objects.create(organization=org, name=f"t{i}", budget_duration="1mo") for i in range(5)]
    keys = [
        VirtualKey.objects.create(
            key_hash=uuid.uuid4().hex, prefix="sk-b", organization=org, team=teams[i % 5], budget_duration="1d"
        )
        for i in range(args.keys)
    ]
    client = redis_client()
    client.delete(STREAM_KEY)
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for i in range(args.events):
        key = keys[i % len(keys)]
        event = SpendEvent(
            request_id=uuid.uuid4().hex,
            created_at=now,
            route="/v1/chat/completions",
            status=200 if i % 50 else 500,
            model=("gpt-4o-mini", "claude-3-5-haiku", "gemini-2.5-flash")[i % 3],
            llm_provider="openai",
            organization_id=org.pk,
            team_id=key.team_id,
            key_id=key.pk,
            customer_id=f"cust-{i % 200}",
            prompt_tokens=120,
            completion_tokens=40,
            cost="0.000042",
            latency_ms=12.5,
        )
        pipe.xadd(STREAM_KEY, {STREAM_FIELD: event.to_json()})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()

    started = time.perf_counter()
    result = stream_drain(batch_size=args.batch, max_seconds=3600)
    elapsed = time.perf_counter() - started
    assert result.inserted == args.events, result
    assert SpendLog.objects.count() >= args.events
    replay_started = time.perf_counter()
    from apps.spend.ingest import spend_ingest_events

    sample = [SpendEvent(request_id=r, created_at=now, route="", status=200) for r in
              SpendLog.objects.values_list("request_id", flat=True)[:args.batch]]  # fmt: skip
    assert spend_ingest_events(sample).inserted == 0
    replay_ms = (time.perf_counter() - replay_started) * 1000
    print(f"database: {connection.vendor}, batch {args.batch}, {args.keys} keys, {args.events} events")
    print(f"ingested {result.inserted} events in {elapsed:.2f} s: {result.inserted / elapsed:,.0f} events/s")
    print(f"  daily aggregate rows {DailySpend.objects.count()}, window rows {BudgetWindow.objects.count()}")
    print(f"  replaying one batch of {len(sample)} duplicates: {replay_ms:.1f} ms, 0 inserted")


if __name__ == "__main__":
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        sys.exit(relaunch_with_services())
    main()
