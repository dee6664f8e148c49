"""What monitoring's beat jobs cost: one probe run over N deployments, one alert evaluation over M ledger rows.

    .venv/bin/python bench/monitoring_bench.py [--deployments 100] [--rows 200000] [--upstream-ms 50]

Without DATABASE_URL/REDIS_URL it starts throwaway Postgres + Redis with scripts/services.sh and a
fresh database. Deployments point at a local OpenAI-compatible upstream (an aiohttp server in a
thread) that answers after ``--upstream-ms``; every tenth answers 500. The ledger gets ``--rows``
rows in the last 15 minutes over those deployments and 50 keys (2% upstream failures, 3% of the
gateway's own 429s). Times ``deployment_probes_run`` and ``alerts_evaluate`` (first run: rules plus
sending to one webhook; second run: the same window, nothing new to send).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def relaunch_with_services() -> int:
    workdir = tempfile.mkdtemp(prefix="monitoring-bench-")
    script = (
        f"source scripts/services.sh; services_start {workdir} >&2; "
        f"trap 'services_stop {workdir}' EXIT; "
        f'"{sys.executable}" bench/monitoring_bench.py "$@"'
    )
    return subprocess.call(["bash", "-c", script, "bench", *sys.argv[1:]], cwd=ROOT)


def start_upstream(delay_ms: int) -> str:
    """A local upstream and webhook receiver: chat answers after ``delay_ms``; model "fail" answers 500."""
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(delay_ms / 1000)
        if body.get("model") == "fail":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        return web.json_response({"id": "x", "object": "chat.completion", "choices": [], "usage": usage})

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port_box: list[int] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        port_box.append(site._server.sockets[0].getsockname()[1])
        ready.set()
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    ready.wait(10)
    return f"http://127.0.0.1:{port_box[0]}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--upstream-ms", type=int, default=50)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL"):
        sys.exit(relaunch_with_services())

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings.test")
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from apps.keys.models import VirtualKey
    from apps.monitoring.models import AlertChannel
    from apps.monitoring.probes import deployment_probes_run
    from apps.monitoring.services import alerts_evaluate
    from apps.proxy.crypto import encrypt
    from apps.proxy.models import ModelDeployment
    from apps.spend.models import SpendLog
    from apps.teams.models import Organization, Team

    call_command("migrate", verbosity=0)
    base = start_upstream(args.upstream_ms)
    org = Organization.objects.create(name=f"bench-{uuid.uuid4().hex[:6]}")
    team = Team.objects.create(organization=org, name="t")
    keys = [
        VirtualKey.objects.create(key_hash=uuid.uuid4().hex, prefix="sk-b", organization=org, team=team)
        for _ in range(50)
    ]
    deployments = ModelDeployment.objects.bulk_create(
        ModelDeployment(
            model_name=f"m{i % 10}",
            provider="openai_compatible",
            model="fail" if i % 10 == 0 else "ok",
            api_base=f"{base}/v1",
            organization=org,
        )
        for i in range(args.deployments)
    )
    AlertChannel.objects.create(name="hook", kind="webhook", organization=org, url_encrypted=encrypt(f"{base}/hook"))
    now = timezone.now()
    rows = []
    for i in range(args.rows):
        key, deployment = keys[i % len(keys)], deployments[i % len(deployments)]
        status, error = (502, "upstream_connection") if i % 50 == 0 else (200, "")
        if i % 33 == 0:
            status, error = 429, "rate_limit:requests"
        rows.append(
            SpendLog(
                request_id=uuid.uuid4().hex,
                created_at=now - timedelta(seconds=(i % 840)),
                status=status,
                error_type=error,
                model=deployment.model_name,
                deployment_id=deployment.pk,
                organization_id=org.pk,
                team_id=team.pk,
                key_id=key.pk,
            )
        )
        if len(rows) == 10_000:
            SpendLog.objects.bulk_create(rows)
            rows = []
    SpendLog.objects.bulk_create(rows)

    started = time.perf_counter()
    results = deployment_probes_run()
    probe_s = time.perf_counter() - started
    failed = sum(1 for r in results.values() if not r.ok)
    started = time.perf_counter()
    sent = alerts_evaluate()
    first_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    again = alerts_evaluate()
    second_ms = (time.perf_counter() - started) * 1000
    print(f"{args.deployments} deployments, upstream answering in {args.upstream_ms} ms, {args.rows} ledger rows")
    print(f"probe run: {probe_s:.2f} s for {len(results)} deployments ({failed} failed), concurrency 8")
    print(f"alert evaluation: {first_ms:.0f} ms, {len(sent)} alerts sent; again in the same window: "
          f"{second_ms:.0f} ms, {len(again)} sent")  # fmt: skip


if __name__ == "__main__":
    main()
