"""The ledger at scale: every dashboard, summary, report and explorer query against N generated ledger rows.

    .venv/bin/python bench/ledger_scale.py [--rows 100000000] [--months 13] [--orgs 50] [--keys 2000]
    .venv/bin/python bench/ledger_scale.py --dsn postgres://user@host:5432/postgres --rows 10000000

Creates its own database (``ledger_bench_<pid>``) on the server of ``--dsn`` (default: a throwaway
Postgres started with scripts/services.sh under ``--workdir``, tuned as in docs/operations.md), migrates
it (the ledger partitioned by month), generates the rows with ``generate_series`` in time order (spread
over ``--months`` months, ``--orgs`` organizations, ``--keys`` keys, 5 models, 10 % of requests for one of
3 customers of their key, 2 % refusals, 1 % upstream errors),
builds the daily aggregates from them as ingestion would have, then runs each query the dashboard, the
summary API, the reports, the key usage, the LiteLLM-compatible API and the request explorer send (captured
from the real code paths, as a superuser, an organization admin and a team admin) cold (after a Postgres
restart, when the bench started the server) and warm (median of 3), and prints ms per query and the
plan's scan nodes. The database is dropped at the end (``--keep`` keeps it). Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-haiku", "gemini-2.5-flash", "llama-3.1-70b")
PG_TUNING = "-c shared_buffers=2GB -c work_mem=64MB -c maintenance_work_mem=1GB -c max_wal_size=8GB -c effective_cache_size=12GB -c random_page_cost=1.1 -c max_parallel_workers_per_gather=2"  # noqa: E501


def start_postgres(workdir: Path) -> tuple[str, str]:
    """A throwaway Postgres (scripts/services.sh), restarted with the tuning above; returns its DSN and port."""
    script = 'source scripts/services.sh; services_start "$1" >&2; echo $DATABASE_URL'
    out = subprocess.run(["bash", "-c", script, "bench", str(workdir)], cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    port = (workdir / "pg_port").read_text().strip()
    restart_postgres(workdir, port)
    return out.stdout.strip().splitlines()[-1], port


def restart_postgres(workdir: Path, port: str) -> None:
    """Restart with the bench's tuning; also empties shared buffers (the OS page cache stays: "cold" here
    means a cold Postgres, not a cold disk)."""
    options = f"-h 127.0.0.1 -p {port} -k {workdir}/pg -c fsync=off -c synchronous_commit=off {PG_TUNING}"
    pg_ctl = '_as_pg "$(_pg_bin)/pg_ctl" -D "$1/pg/data" -w -t 600 -m fast'
    script = f'source scripts/services.sh; {pg_ctl} -o "{options}" restart'
    subprocess.run(["bash", "-c", script, "bench", str(workdir)], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def stop_services(workdir: Path) -> None:
    subprocess.run(["bash", "-c", 'source scripts/services.sh; services_stop "$1"', "bench", str(workdir)], cwd=ROOT)


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def admin_sql(dsn: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


def generate(rows: int, months: int, orgs: int, keys: int) -> dict:
    """Tenants, keys, partitions, the ledger rows and their daily aggregates; returns the ids queried later."""
    from datetime import UTC, datetime

    from django.db import connection

    from apps.keys.models import VirtualKey
    from apps.proxy.models import ModelDeployment
    from apps.spend.partitions import month_add, month_start, spendlog_partitions_ensure
    from apps.teams.models import Membership, Organization, Team, User

    now = datetime.now(tz=UTC)
    first = month_add(month_start(now), -(months - 1))
    spendlog_partitions_ensure(now=first, ahead=months + 2)
    org_rows = Organization.objects.bulk_create([Organization(name=f"org{i}") for i in range(orgs)])
    team_rows = Team.objects.bulk_create([Team(organization=o, name=f"t{j}") for o in org_rows for j in range(4)])
    users = User.objects.bulk_create([User(username=f"u{i}") for i in range(keys // 4)])
    key_rows = VirtualKey.objects.bulk_create(
        VirtualKey(
            key_hash=f"{i:064x}",
            prefix="sk-b",
            alias=f"key{i}",
            organization_id=t.organization_id,
            team=t,
            user=users[i % len(users)],
        )
        for i, t in ((i, team_rows[i % len(team_rows)]) for i in range(keys))
    )
    deployments = ModelDeployment.objects.bulk_create(
        ModelDeployment(model_name=m, provider="openai", model=m, api_base="http://127.0.0.1:9") for m in MODELS
    )
    root = User.objects.create(username="root", is_superuser=True, is_staff=True)
    org_admin = User.objects.create(username="orgadmin", is_staff=True)
    Membership.objects.create(user=org_admin, organization=org_rows[0], team=None, role="admin")
    team_admin = User.objects.create(username="teamadmin", is_staff=True)
    Membership.objects.create(user=team_admin, organization=org_rows[0], team=team_rows[0], role="admin")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE bench_keys AS SELECT row_number() OVER (ORDER BY id) - 1 AS n, id, organization_id,"
            " team_id, user_id FROM keys_virtualkey"
        )
        cursor.execute("SELECT array_agg(id ORDER BY id) FROM proxy_modeldeployment")
        deployment_ids = cursor.fetchone()[0]
        span = (now - first).total_seconds()
        chunk = 1_000_000
        started = time.perf_counter()
        for begin in range(0, rows, chunk):
            end = min(rows, begin + chunk)
            cursor.execute(
                """
                INSERT INTO spend_spendlog (request_id, created_at, route, status, model, llm_provider, deployment_id,
                  organization_id, team_id, key_id, key_alias, user_id, customer_id, session_id, prompt_tokens,
                  completion_tokens, cached_tokens, cost, latency_ms, ttft_ms, overhead_ms, upstream_ttfb_ms,
                  retries, error_type, limit_type, metadata, trace_id, cache_hit, cost_saved, guardrails)
                SELECT 'req_' || g, %(first)s::timestamptz + make_interval(secs => g * %(step)s),
                  '/v1/chat/completions', s.status, (%(models)s::text[])[1 + (g / 7) %% 5], 'openai',
                  (%(deployments)s::bigint[])[1 + (g / 7) %% 5], k.organization_id, k.team_id, k.id, 'key' || k.n,
                  k.user_id, CASE WHEN g %% 10 = 0 THEN 'cust-' || (k.n * 3 + g %% 3) ELSE '' END, '', 120, 40, 0,
                  0.000042 * (1 + g %% 7), 800 + g %% 400, NULL, 1.5, 700, 0,
                  CASE WHEN s.status = 429 THEN 'rate_limit:requests' WHEN s.status = 502 THEN 'upstream_error'
                       ELSE '' END,
                  CASE WHEN s.status = 429 THEN 'requests' ELSE '' END, '{}'::jsonb,
                  CASE WHEN g %% 20 = 0 THEN md5(g::text) ELSE '' END, false, 0, '{}'::jsonb
                FROM generate_series(%(begin)s::bigint, %(end)s::bigint) g
                JOIN bench_keys k ON k.n = (g * 7919) %% %(keys)s
                CROSS JOIN LATERAL (SELECT CASE WHEN (g / 3) %% 50 = 0 THEN 429 WHEN (g / 3) %% 100 = 1 THEN 502
                                    ELSE 200 END AS status) s
                """,
                {
                    "first": first,
                    "step": span / rows,
                    "models": list(MODELS),
                    "deployments": deployment_ids,
                    "begin": begin,
                    "end": end - 1,
                    "keys": keys,
                },
            )
            done = end / rows
            eta = (time.perf_counter() - started) / done * (1 - done)
            print(f"  ledger rows {end:,} ({done:.0%}, {eta / 60:.1f} min left)", file=sys.stderr, flush=True)
        print("  daily aggregates ...", file=sys.stderr, flush=True)
        cursor.execute(
            """
            INSERT INTO spend_dailyspend (bucket, day, organization_id, team_id, key_id, user_id, customer_id, model,
              deployment_id, requests, errors, prompt_tokens, completion_tokens, cached_tokens, cost)
            SELECT concat_ws('|', d, organization_id, team_id, key_id, user_id, customer_id, model, deployment_id), d,
              organization_id, team_id, key_id, user_id, customer_id, model, deployment_id, count(*),
              count(*) FILTER (WHERE status >= 400), sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens),
              sum(cost)
            FROM (SELECT (created_at AT TIME ZONE 'UTC')::date AS d, * FROM spend_spendlog) l
            GROUP BY d, organization_id, team_id, key_id, user_id, customer_id, model, deployment_id
            """
        )
        cursor.execute(
            """
            INSERT INTO spend_monthlyspend (bucket, month, organization_id, team_id, key_id, user_id, customer_id,
              model, deployment_id, requests, errors, prompt_tokens, completion_tokens, cached_tokens, cost)
            SELECT concat_ws('|', m, organization_id, team_id, key_id, user_id, customer_id, model, deployment_id), m,
              organization_id, team_id, key_id, user_id, customer_id, model, deployment_id, sum(requests), sum(errors),
              sum(prompt_tokens), sum(completion_tokens), sum(cached_tokens), sum(cost)
            FROM (SELECT date_trunc('month', day)::date AS m, * FROM spend_dailyspend) d
            GROUP BY m, organization_id, team_id, key_id, user_id, customer_id, model, deployment_id
            """
        )
        print(f"  generated in {(time.perf_counter() - started) / 60:.1f} min; VACUUM ANALYZE ...", file=sys.stderr)
    return {
        "users": {"superuser": root, "org admin": org_admin, "team admin": team_admin},
        "key": key_rows[0],
        "team": team_rows[0],
        "org": org_rows[0],
        "deployment": deployments[0],
    }


def captured(operation) -> list[str]:
    """The SQL statements ``operation`` sends that read the ledger or its aggregates."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        operation()
    tables = ("spend_spendlog", "spend_dailyspend", "spend_monthlyspend")
    return [q["sql"] for q in queries.captured_queries if any(table in q["sql"] for table in tables)]


def operations(ids: dict) -> list[tuple[str, object]]:
    """(label, callable) for every reading code path; each callable runs the real code as a user would."""
    from datetime import timedelta

    from django.test import Client
    from django.utils import timezone

    from apps.console.dashboard import dashboard_for
    from apps.spend.models import DailySpend, MonthlySpend, Report
    from apps.spend.reports import report_period, report_rows
    from apps.spend.selectors import key_usage, spend_summary

    ops: list[tuple[str, object]] = []
    now = timezone.now()
    for who, user in ids["users"].items():
        ops.append((f"dashboard ({who})", lambda user=user: dashboard_for(user, now)))
        client = Client()
        client.force_login(user)
        for label, query in (
            ("explorer, no filter", ""),
            ("explorer, key", f"key={ids['key'].pk}"),
            ("explorer, team", f"team={ids['team'].pk}"),
            ("explorer, model", "model=gpt-4o"),
            ("explorer, deployment", f"deployment={ids['deployment'].pk}"),
            ("explorer, status 429", "status=429"),
            ("explorer, 5xx", "status=server_error"),
            ("explorer, limit type", "limit_type=requests"),
            ("explorer, last 24h", "period=24h"),
            ("explorer, request id", "q=req_123457"),
            ("explorer, trace id", "q=" + "0" * 31 + "1"),
            ("explorer, 30 days, model + 429", "period=30d&model=gpt-4o&status=429"),
        ):
            url = "/admin/spend/spendlog/?" + query
            ops.append((f"{label} ({who})", lambda client=client, url=url: client.get(url)))
        for group_by in ("model", "key", "team", "day"):
            url = f"/api/v1/spend/summary/?group_by={group_by}"
            ops.append((f"summary API by {group_by}, all time ({who})", lambda c=client, u=url: c.get(u)))
        ops.append((f"spend logs API, key ({who})", lambda c=client: c.get(f"/api/v1/spend/logs/?key={ids['key'].pk}")))
    org = ids["org"]
    for period, group_by in (("monthly", "key"), ("weekly", "model"), ("daily", "team")):
        report = Report.objects.create(name=f"bench {period}", organization=org, period=period, group_by=group_by)
        start, end = report_period(report, now)
        ops.append((f"report, org, {period} by {group_by}", lambda r=report, s=start, e=end: report_rows(r, s, e)))
    start = now - timedelta(days=90)
    daily, monthly = (
        DailySpend.objects.filter(organization_id=org.pk),
        MonthlySpend.objects.filter(organization_id=org.pk),
    )
    ops.append(
        (
            "summary, org, last 90 days by key",
            lambda: spend_summary(daily, monthly=monthly, group_by="key", start=start),
        )
    )
    ops.append(("key usage (/v1/key/info)", lambda: key_usage(ids["key"].pk)))
    return ops


def explain_nodes(sql: str) -> str:
    """The plan's scan nodes, e.g. "Index Only Scan dailyspend_org x13"."""
    from collections import Counter

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    nodes: Counter = Counter()

    def walk(node: dict) -> None:
        if "Scan" in node["Node Type"]:
            where = node.get("Index Name") or node.get("Relation Name", "")
            for prefix, short in (("spend_spendlog_", ""), ("spend_", ""), ("_created_at", ""), ("_id_", "_")):
                where = where.replace(prefix, short)
            nodes[f"{node['Node Type'].replace(' Scan', '')} {where}"] += 1
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return ", ".join(f"{name}" + (f" x{n}" if n > 1 else "") for name, n in nodes.most_common(3))


def timed(sql: str) -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        started = time.perf_counter()
        cursor.execute(sql)
        cursor.fetchall()
        return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--months", type=int, default=13)
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--dsn", default="", help="a Postgres server to create the bench database on")
    parser.add_argument("--workdir", default="", help="where the throwaway Postgres lives (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the bench database (and server) afterwards")
    args = parser.parse_args()

    workdir = None
    dsn = args.dsn
    if not dsn:
        workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ledger-bench-", dir="/work"))
        dsn, _port = start_postgres(workdir)
    name = f"ledger_bench_{os.getpid()}"
    admin_sql(dsn, f"CREATE DATABASE {name}")
    try:
        run(args, with_database(dsn, name), workdir)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            admin_sql(dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            if workdir is not None:
                stop_services(workdir)
                subprocess.run(["rm", "-rf", str(workdir)], check=False)


def run(args, dsn: str, workdir: Path | None) -> None:
    os.environ["DATABASE_URL"] = dsn
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings.test")
    os.environ.pop("REDIS_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    ids = generate(args.rows, args.months, args.orgs, args.keys)
    connection.cursor().execute("VACUUM ANALYZE")  # as autovacuum would have by then: visibility map, statistics
    generation_min = (time.perf_counter() - started) / 60
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database())), "
                       "(SELECT count(*) FROM spend_dailyspend), (SELECT count(*) FROM spend_monthlyspend), "
                       "(SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
                       " WHERE inhparent = 'spend_spendlog'::regclass)")  # fmt: skip
        size, daily_rows, monthly_rows, ledger_bytes = cursor.fetchone()
    statements: list[tuple[str, str]] = []
    for label, operation in operations(ids):
        for i, sql in enumerate(captured(operation)):
            statements.append((label + (f" #{i + 1}" if i else ""), sql))
    cold: dict[int, float] = {}
    if workdir is not None:
        port = urlsplit(dsn).port
        connection.close()
        restart_postgres(workdir, str(port))
        for index, (_, sql) in enumerate(statements):
            cold[index] = timed(sql)
    print(f"ledger rows {args.rows:,} over {args.months} months, {args.orgs} orgs, {args.keys} keys; "
          f"daily aggregate rows {daily_rows:,}, monthly {monthly_rows:,}; database {size}, ledger with indexes "
          f"{ledger_bytes / args.rows:,.0f} bytes per row; generated in {generation_min:.1f} min")  # fmt: skip
    print(f"{'query':58} {'cold ms':>8} {'warm ms':>8}  plan (scan nodes)")
    slowest = 0.0
    for index, (label, sql) in enumerate(statements):
        warm = statistics.median(timed(sql) for _ in range(3))
        slowest = max(slowest, warm)
        cold_text = f"{cold[index]:8.1f}" if index in cold else "       -"
        print(f"{label[:58]:58} {cold_text} {warm:8.1f}  {explain_nodes(sql)}")
    print(f"slowest warm query: {slowest:.1f} ms")


if __name__ == "__main__":
    main()
