"""Spend ingestion throughput: events/s from the Redis outbox stream into Postgres (ledger + aggregates).

    .venv/bin/python bench/ingest_bench.py [--events 50000] [--batch 500] [--keys 50]
    .venv/bin/python bench/ingest_bench.py --consumers 1,2,4 [--events 50000]
    .venv/bin/python bench/ingest_bench.py --embedded [--events 20000] [--batch 500]

Without DATABASE_URL/REDIS_URL it starts throwaway Postgres + Redis with scripts/services.sh and a
fresh database. Emits the events with the outbox's stream format (pipelined XADDs, not timed), then
times ``stream_drain`` in one process: one consumer, one transaction per batch, XACK after commit.
``--consumers 1,2,4`` repeats that with N consumer processes draining the same stream at once (as N
Celery workers do), the stream refilled before each run: events/s of the whole group.

``--embedded`` measures the embedded default's writer instead: a throwaway SQLite file (local
settings, no Redis) and ``spend_ingest_events`` per batch, as the in-process outbox thread calls it;
it prints CPU microseconds per event, the cost the serving process pays for every request.
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
    parser.add_argument("--embedded", action="store_true", help="SQLite, in-process (the embedded default)")
    parser.add_argument("--consumers", default="", help="comma-separated consumer process counts, e.g. 1,2,4")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    if args.embedded:
        embedded(args)
        return
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

    def fill() -> None:
        """The stream holds exactly ``args.events`` new events (not timed)."""
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

    if args.consumers:
        for count in (int(n) for n in args.consumers.split(",")):
            fill()
            before = SpendLog.objects.count()
            inserted, elapsed = drain_in_processes(count, args.batch)
            assert inserted == args.events == SpendLog.objects.count() - before, (inserted, args.events)
            print(f"{count} consumer(s), batch {args.batch}: {args.events} events in {elapsed:.2f} s: "
                  f"{args.events / elapsed:,.0f} events/s")  # fmt: skip
        return
    fill()
    now = time.time()
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


def _drain_child(index: int, batch: int, results) -> None:
    from django.db import connection

    from apps.spend.stream import stream_drain

    connection.close()  # the parent's connection must not be shared with the forked child
    result = stream_drain(batch_size=batch, max_seconds=3600, consumer=f"bench-{os.getpid()}-{index}")
    results.put(result.inserted)


def drain_in_processes(count: int, batch: int) -> tuple[int, float]:
    """``count`` consumer processes drain the stream together; (events inserted, wall seconds)."""
    import multiprocessing

    from django.db import connection

    connection.close()
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    children = [context.Process(target=_drain_child, args=(i, batch, results)) for i in range(count)]
    started = time.perf_counter()
    for child in children:
        child.start()
    inserted = sum(results.get(timeout=3600) for _ in children)
    elapsed = time.perf_counter() - started
    for child in children:
        child.join(60)
    return inserted, elapsed


def embedded(args: argparse.Namespace) -> None:
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    os.environ["DJANGO_SETTINGS_MODULE"] = "gateway_project.settings.local"
    os.environ["GATEWAY_RUN_DIR"] = tempfile.mkdtemp(prefix="ingest-bench-sqlite-")
    import django

    django.setup()
    from django.core.management import call_command

    from apps.keys.models import VirtualKey
    from apps.spend.events import SpendEvent
    from apps.spend.ingest import spend_ingest_events
    from apps.spend.models import SpendLog
    from apps.teams.models import Organization, Team

    call_command("migrate", verbosity=0)
    org = Organization.objects.create(name="bench", time_zone="Europe/Berlin")
    team = Team.objects.create(organization=org, name="t", budget_duration="1mo")
    keys = [
        VirtualKey.objects.create(key_hash=uuid.uuid4().hex, prefix="sk-b", organization=org, team=team,
                                  budget_duration="1d")
        for _ in range(args.keys)
    ]  # fmt: skip
    now = time.time()
    events = [
        SpendEvent(
            request_id=f"req_{i:012x}", created_at=now, route="/v1/chat/completions", status=200,
            model="gpt-4o-mini", llm_provider="openai", deployment_id=1, organization_id=org.pk, team_id=team.pk,
            key_id=keys[i % len(keys)].pk, key_alias="bench", prompt_tokens=42, completion_tokens=48,
            cost="0.0000351", latency_ms=0.5,
        )
        for i in range(args.events)
    ]  # fmt: skip
    batches = [events[i : i + args.batch] for i in range(0, len(events), args.batch)]
    spend_ingest_events(batches.pop(0))  # warm up (connection, caches)
    wall, cpu = time.perf_counter(), time.process_time()
    inserted = sum(spend_ingest_events(batch).inserted for batch in batches)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert inserted == sum(len(b) for b in batches) and SpendLog.objects.count() == len(events)
    print(f"database: sqlite (embedded default), batch {args.batch}, {args.keys} keys, {inserted} events")
    print(f"ingested {inserted} events in {wall:.2f} s: {inserted / wall:,.0f} events/s")
    print(f"  CPU per event: {cpu / inserted * 1e6:.1f} us (what the serving process pays per request)")


if __name__ == "__main__":
    if "--embedded" in sys.argv:
        main()
        sys.exit(0)
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        sys.exit(relaunch_with_services())
    main()
