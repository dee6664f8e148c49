"""Log sinks: what the fan-out adds to spend ingestion, and how fast a worker delivers.

    .venv/bin/python bench/sinks_bench.py [--events 20000] [--batch 500] [--sinks 2]

Without DATABASE_URL/REDIS_URL it starts throwaway Postgres + Redis with scripts/services.sh. Ingests the
same number of events through ``spend_ingest_events`` twice, without sinks and with ``--sinks`` HTTP sinks
of the organization (so every row is queued for each), and prints the difference per event: the hook's
cost (one query for the enabled sinks, the records built and pushed in one pipelined round trip). Then
times ``sinks_deliver`` draining those queues into a local HTTP receiver (a thread in this process that
answers 200 at once): records per second one worker delivers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def relaunch_with_services() -> int:
    workdir = tempfile.mkdtemp(prefix="sinks-bench-")
    script = (
        f"source scripts/services.sh; services_start {workdir} >&2; "
        f"trap 'services_stop {workdir}' EXIT; "
        f'"{sys.executable}" bench/sinks_bench.py "$@"'
    )
    return subprocess.call(["bash", "-c", script, "bench", *sys.argv[1:]], cwd=ROOT)


class Receiver(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received += body.count(b'"request_id"')
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--sinks", type=int, default=2)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings.test")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from apps.sinks.dispatch import sink_queues, sinks_deliver
    from apps.sinks.models import LogSink
    from apps.spend.events import SpendEvent
    from apps.spend.ingest import spend_ingest_events
    from apps.teams.models import Organization, Team

    settings.SINKS_QUEUE_MAX_RECORDS = args.events  # every record fits: this measures cost, not the cap
    call_command("migrate", verbosity=0)
    org = Organization.objects.create(name=f"bench-{uuid.uuid4().hex[:6]}")
    team = Team.objects.create(organization=org, name="t")

    def events() -> list[SpendEvent]:
        now = time.time()
        return [
            SpendEvent(request_id=uuid.uuid4().hex, created_at=now, route="/v1/chat/completions", status=200,
                       model="gpt-4o-mini", llm_provider="openai", organization_id=org.pk, team_id=team.pk,
                       key_id=1, key_alias="bench-app", prompt_tokens=120, completion_tokens=40,
                       cost="0.000042", latency_ms=12.5)
            for _ in range(args.events)
        ]  # fmt: skip

    def ingest_all(batch_events: list[SpendEvent]) -> tuple[float, float]:
        """Wall and CPU seconds of this process (CPU: what the worker pays, whatever else the machine runs)."""
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(batch_events), args.batch):
            spend_ingest_events(batch_events[start : start + args.batch])
        return time.perf_counter() - wall, time.process_time() - cpu

    spend_ingest_events(events()[:10])  # warm up
    plain = ingest_all(events())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    sinks = [
        LogSink.objects.create(organization=org, kind="http", name=f"bench-{i}", url=url, batch_size=args.batch)
        for i in range(args.sinks)
    ]
    queues = sink_queues()
    for sink in sinks:
        queues.forget(sink.pk)
    with_sinks = ingest_all(events())
    queued = sum(queues.length(sink.pk) for sink in sinks)

    started, delivery_cpu = time.perf_counter(), time.process_time()
    delivered = 0
    while any(queues.length(sink.pk) for sink in sinks):
        delivered += sinks_deliver(max_seconds=60).delivered
    delivering, delivery_cpu = time.perf_counter() - started, time.process_time() - delivery_cpu
    server.shutdown()

    cpu_us = (with_sinks[1] - plain[1]) / args.events * 1e6
    print(f"{args.events} events, ingestion batches of {args.batch}, {args.sinks} HTTP sinks taking every record")
    for label, (wall, cpu) in (("without sinks", plain), ("with sinks", with_sinks)):
        print(f"ingestion {label:13}: {args.events / wall:,.0f} events/s, {cpu / args.events * 1e6:.1f} us CPU/event")
    print(f"  the fan-out: +{cpu_us:.1f} us CPU per event ({queued} records queued)")
    print(f"delivery: {delivered} records in {delivering:.2f} s: {delivered / delivering:,.0f} records/s, "
          f"{delivery_cpu / delivered * 1e6:.1f} us CPU/record incl. the receiver thread "
          f"(batches of {args.batch}, receiver got {Receiver.received})")  # fmt: skip


if __name__ == "__main__":
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        sys.exit(relaunch_with_services())
    main()
