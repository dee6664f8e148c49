"""The request explorer on a large ledger: page times per filter, and CSV export throughput.

    .venv/bin/python bench/explorer_bench.py [--rows 1000000] [--repeat 5] [--export 100000]

Without DATABASE_URL it starts a throwaway Postgres with scripts/services.sh and a fresh database.
Fills ``SpendLog`` with ``--rows`` rows in one INSERT ... SELECT (two organizations, 10 teams, 200 keys,
4 deployments, 2% errors, 1% refusals by a limiter, spread over ~23 days), ANALYZEs, then renders the
admin pages in-process (Django's test client, a superuser and a team admin) and prints the median
time of each, beside what a plain ``COUNT(*)`` of the ledger costs. The export is read to the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def relaunch_with_services() -> int:
    workdir = tempfile.mkdtemp(prefix="explorer-bench-")
    script = (
        f"source scripts/services.sh; services_start {workdir} >&2; "
        f"trap 'services_stop {workdir}' EXIT; "
        f'"{sys.executable}" bench/explorer_bench.py "$@"'
    )
    return subprocess.call(["bash", "-c", script, "bench", *sys.argv[1:]], cwd=ROOT)


FILL = """
INSERT INTO spend_spendlog (request_id, created_at, route, status, model, llm_provider, deployment_id,
    organization_id, team_id, key_id, key_alias, user_id, customer_id, session_id, prompt_tokens,
    completion_tokens, cached_tokens, cost, latency_ms, ttft_ms, overhead_ms, upstream_ttfb_ms, retries,
    error_type, limit_type, metadata)
SELECT 'req_bench_' || i, now() - i * interval '2 seconds', '/v1/chat/completions',
    CASE WHEN i %% 100 = 0 THEN 429 WHEN i %% 50 = 1 THEN 502 ELSE 200 END,
    (ARRAY['gpt-4o-mini', 'gpt-4o', 'claude-3-5-haiku', 'gemini-2.5-flash'])[1 + i %% 4], 'openai',
    (%(deployments)s::bigint[])[1 + i %% 4], (%(orgs)s::bigint[])[1 + (i %% 200) / 100],
    (%(teams)s::bigint[])[1 + (i %% 200) / 20], (%(keys)s::bigint[])[1 + i %% 200], 'key-' || (i %% 200), NULL,
    '', '', 120, 40, 0, 0.000042, 12.5, NULL, 0.4, 11.0, 0, '',
    CASE WHEN i %% 100 = 0 THEN 'requests' ELSE '' END, '{}'::jsonb
FROM generate_series(1, %(rows)s) AS i
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--export", type=int, default=100_000)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        sys.exit(relaunch_with_services())

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings.test")
    import django

    django.setup()
    from asgiref.sync import async_to_sync
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from apps.keys.models import VirtualKey
    from apps.proxy.models import ModelDeployment
    from apps.spend.models import SpendLog
    from apps.teams.models import Membership, Organization, Team, User

    setup_test_environment()
    call_command("migrate", verbosity=0)
    orgs = [Organization.objects.create(name=f"bench-org-{n}") for n in range(2)]
    teams = [Team.objects.create(organization=orgs[n // 5], name=f"team-{n}") for n in range(10)]
    keys = [
        VirtualKey.objects.create(key_hash=f"{n:064x}", prefix="sk-b", organization=teams[n // 20].organization,
                                  team=teams[n // 20], alias=f"key-{n}")
        for n in range(200)
    ]  # fmt: skip
    deployments = [
        ModelDeployment.objects.create(model_name=f"m{n}", provider="mock", model="x", organization=orgs[0])
        for n in range(4)
    ]
    root = User.objects.create_superuser("bench-root", "root@example.com", "x")
    alice = User.objects.create_user("bench-alice", "alice@example.com", "x", is_staff=True)
    Membership.objects.create(user=alice, team=teams[0], organization=orgs[0], role="admin")

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            FILL,
            {
                "rows": args.rows,
                "orgs": [o.pk for o in orgs],
                "teams": [t.pk for t in teams],
                "keys": [k.pk for k in keys],
                "deployments": [d.pk for d in deployments],
            },
        )
        cursor.execute("ANALYZE spend_spendlog")
    print(f"filled {args.rows:,} ledger rows in {time.perf_counter() - started:.1f} s (Postgres)")

    def timed(fn) -> float:
        runs = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - t0) * 1000)
        return statistics.median(runs)

    count_ms = timed(lambda: SpendLog.objects.count())
    print(f"  a plain COUNT(*) of the ledger (what the admin would run on every page): {count_ms:,.0f} ms")
    clients = {}
    for user in (root, alice):
        clients[user.username] = Client()
        clients[user.username].force_login(user)
    some = SpendLog.objects.filter(key=keys[3]).values_list("pk", "request_id").first()
    pages = [
        ("bench-root", "", "all requests, superuser"),
        ("bench-alice", "", "all requests, team admin (1 of 10 teams)"),
        ("bench-root", "?status=429", "rate limited"),
        ("bench-root", "?status=server_error", "5xx"),
        ("bench-root", "?limit_type=requests", "limit type"),
        ("bench-root", f"?key={keys[3].pk}", "one key"),
        ("bench-root", f"?team={teams[4].pk}", "one team"),
        ("bench-root", f"?deployment={deployments[1].pk}", "one deployment"),
        ("bench-root", "?model=gpt-4o", "one model"),
        ("bench-root", "?period=24h", "last 24 hours"),
        ("bench-alice", f"?period=7d&status=429&key={keys[3].pk}", "team admin: 7 days, 429, one key"),
        ("bench-root", f"?q={some[1]}", "search by request id"),
        ("bench-root", "?p=199", "page 200 (the 10,000th row)"),
    ]
    print(f"admin pages, median of {args.repeat} (ms):")
    for who, query, label in pages:
        client = clients[who]
        response = client.get(f"/admin/spend/spendlog/{query}")
        assert response.status_code == 200, (query, response.status_code)
        ms = timed(lambda client=client, query=query: client.get(f"/admin/spend/spendlog/{query}"))
        print(f"  {ms:8.1f}  {label}")
    ms = timed(lambda: clients["bench-root"].get(f"/admin/spend/spendlog/{some[0]}/change/"))
    print(f"  {ms:8.1f}  a request's page")

    async def read(chunks) -> int:
        total = 0
        async for chunk in chunks:
            total += len(chunk)
        return total

    settings.SPEND_EXPORT_MAX_ROWS = args.export
    started = time.perf_counter()
    response = clients["bench-root"].get("/admin/spend/spendlog/export/")
    size = async_to_sync(read)(response.streaming_content)
    elapsed = time.perf_counter() - started
    print(
        f"CSV export of {args.export:,} rows: {elapsed:.2f} s, {args.export / elapsed:,.0f} rows/s, "
        f"{size / 1e6:.1f} MB (truncated: {response['X-Export-Truncated']})"
    )


if __name__ == "__main__":
    main()
