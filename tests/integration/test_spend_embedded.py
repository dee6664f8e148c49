"""Embedded default (no Redis): the same outbox path records every request exactly, also across exit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal

import pytest
from django.db.models import Sum

from apps.common.redis_target import redis_target
from apps.spend.events import SpendEvent
from apps.spend.models import BudgetWindow, SpendLog
from apps.spend.outbox import LocalOutbox, spend_outbox_create
from tests.factories import SpendEventFactory, VirtualKeyFactory
from tests.integration.spend_processes import ROOT

pytestmark = pytest.mark.integration


def events_for(key, count: int) -> list[SpendEvent]:
    return [SpendEventFactory(key=key, model="mock", cost=f"0.0000{i % 10}1") for i in range(count)]


async def emit(outbox, events) -> None:
    await asyncio.gather(*(outbox.emit(e) for e in events))
    await outbox.close()


@pytest.mark.parametrize("redis_url", ["", "redis://127.0.0.1:1/0"], ids=["no-redis", "redis-down"])
def test_without_a_working_redis_every_event_lands_through_the_local_queue(transactional_db, settings, redis_url):
    settings.REDIS_TARGET = redis_target(redis_url)
    settings.SPEND_EMBEDDED_BEAT = False  # the thread outlives this test: no jobs against other tests' data
    key = VirtualKeyFactory()
    events = events_for(key, 300)
    outbox = spend_outbox_create()
    asyncio.run(emit(outbox, events))
    assert outbox.flush(timeout=60)
    assert SpendLog.objects.count() == 300
    total = sum(Decimal(e.cost) for e in events)
    assert SpendLog.objects.aggregate(s=Sum("cost"))["s"] == total
    assert BudgetWindow.objects.get(scope="key").spent == total


def writer_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "spend-outbox")


def test_a_closed_outbox_leaves_no_writer_behind_and_the_next_one_records_on_its_own(transactional_db, settings):
    """The gateway's lifespan owns its outbox (no module-level queue): closing it writes everything and
    ends its writer thread; the outbox of a restarted gateway starts its own and loses nothing either."""
    settings.REDIS_TARGET = None
    settings.SPEND_EMBEDDED_BEAT = False
    key = VirtualKeyFactory()
    before = writer_threads()
    first = spend_outbox_create()
    asyncio.run(emit(first, events_for(key, 5)))  # emit() closes the outbox at the end
    assert SpendLog.objects.count() == 5
    deadline = time.monotonic() + 30
    while writer_threads() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer_threads() == before

    second = spend_outbox_create()
    asyncio.run(emit(second, events_for(key, 3)))
    assert SpendLog.objects.count() == 8
    assert first.pending == second.pending == 0


def test_a_long_linger_never_delays_a_flush_and_big_bursts_split_into_batches(transactional_db, settings):
    """The writer gathers events for SPEND_LOCAL_OUTBOX_LINGER_SECONDS; flush() cuts that short, and a
    burst larger than one batch is written in several transactions, each event exactly once."""
    settings.REDIS_TARGET = None
    settings.SPEND_EMBEDDED_BEAT = False
    settings.SPEND_LOCAL_OUTBOX_LINGER_SECONDS = 30.0  # far longer than the flush below may take
    key = VirtualKeyFactory()
    outbox = spend_outbox_create().local
    for event in events_for(key, 3):
        outbox.put(event)
    assert outbox.flush(timeout=20)  # True: written, not left lingering for 30 s
    assert SpendLog.objects.count() == 3

    burst = events_for(key, LocalOutbox.batch_size * 2 + 7)
    for event in burst:
        outbox.put(event)
    assert outbox.flush(timeout=60)
    assert outbox.pending == 0
    assert SpendLog.objects.count() == 3 + len(burst)
    assert set(SpendLog.objects.values_list("request_id", flat=True)) >= {e.request_id for e in burst}


SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import django
    django.setup()
    from django.core.management import call_command
    from apps.spend.outbox import spend_outbox_create
    from tests.factories import SpendEventFactory
    call_command("migrate", verbosity=0)
    outbox = spend_outbox_create()
    async def main():
        await asyncio.gather(*(
            outbox.emit(SpendEventFactory(route="/v1/x", model="mock", cost="0.001"))
            for _ in range(int(sys.argv[1]))
        ))
    asyncio.run(main())
    # no flush, no close here: the exit itself must not lose anything
    """
)

COUNT = textwrap.dedent(
    """
    import django
    django.setup()
    from apps.spend.models import SpendLog
    from apps.spend.selectors import spend_log_totals
    totals = spend_log_totals(SpendLog.objects.all())
    print(totals["requests"], totals["cost"])
    """
)


def test_a_single_process_install_loses_nothing_on_clean_exit(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env |= {"DJANGO_SETTINGS_MODULE": "gateway_project.settings.local", "GATEWAY_RUN_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", SCRIPT, "700"], cwd=ROOT, env=env, check=True, timeout=120)
    out = subprocess.run([sys.executable, "-c", COUNT], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    count, total = out.stdout.split()
    assert int(count) == 700
    assert Decimal(total) == Decimal("0.7")


def test_the_embedded_server_records_every_request_through_a_clean_shutdown(tmp_path):
    """scripts/run.sh's setup: SQLite, no Redis, uvicorn; SIGTERM right after the last answer."""
    import signal
    import urllib.request

    import aiohttp

    from tests.integration.spend_processes import free_port

    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env |= {"DJANGO_SETTINGS_MODULE": "gateway_project.settings.local", "GATEWAY_RUN_DIR": str(tmp_path)}
    # The queue still holds the events when SIGTERM arrives: only the shutdown flush can save them.
    env["SPEND_LOCAL_OUTBOX_LINGER_SECONDS"] = "5"
    # Overload shedding off: 300 requests at once lag the one loop on a busy machine, and this test is about
    # recording what was answered, not about shedding (that has its own tests in test_proxy_overload.py).
    env["PROXY_SHED_LOOP_LAG_MS"] = "0"
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120)
    subprocess.run([*manage, "bootstrap_demo"], cwd=ROOT, env=env, check=True, timeout=60, capture_output=True)
    secret = (tmp_path / "demo_key").read_text().strip()
    port = free_port()
    log = open(tmp_path / "uvicorn.log", "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "gateway_project.asgi:application", "--port", str(port), "--no-access-log"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1)
                break
            except OSError:
                time.sleep(0.1)

        async def fire() -> list[str]:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            headers = {"Authorization": f"Bearer {secret}"}
            async with aiohttp.ClientSession() as session:

                async def one() -> str:
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    async with session.post(url, json=body, headers=headers) as response:
                        assert response.status == 200, await response.text()
                        return response.headers["x-request-id"]

                return await asyncio.gather(*(one() for _ in range(300)))

        request_ids = asyncio.run(fire())
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)  # uvicorn re-raises SIGTERM after its graceful shutdown: no atexit
    finally:
        if server.poll() is None:
            server.kill()
        log.close()
    count = textwrap.dedent(
        """
        import django
        django.setup()
        from apps.spend.models import SpendLog
        print(" ".join(SpendLog.objects.values_list("request_id", flat=True)))
        """
    )
    out = subprocess.run([sys.executable, "-c", count], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    recorded = out.stdout.split()
    assert len(recorded) == 300
    assert set(recorded) == set(request_ids)


def test_the_embedded_beat_runs_due_jobs_once_per_interval(db, alpha, settings):
    from apps.spend.embedded import EmbeddedBeat
    from apps.spend.ingest import spend_ingest_events
    from apps.spend.models import BudgetAlert

    key = VirtualKeyFactory(team=alpha, max_budget=Decimal("0.00001"), budget_duration="1d")
    spend_ingest_events(events_for(key, 3))
    beat = EmbeddedBeat()
    assert beat.tick(now=1000.0) == ["roll budget windows", "budget alerts", "scheduled reports", "retention"]
    assert BudgetAlert.objects.filter(kind="hard", scope="key").count() == 1
    assert beat.tick(now=1030.0) == []
    # Monitoring's jobs (apps/monitoring/apps.py) start one interval after the first tick.
    assert beat.tick(now=1061.0) == ["roll budget windows", "budget alerts", "alerts"]
    assert "deployment probes" in beat.tick(now=1000.0 + settings.DEPLOYMENT_PROBE_INTERVAL_SECONDS + 1)
    assert BudgetAlert.objects.count() == 1
