"""Production parity: the install the image makes, run the way the image runs it, carries real traffic.

A venv of ``requirements/base.txt`` alone (no dev package can hide a missing runtime dependency),
production settings with a complete operator environment, the suite's real Postgres (a database of
its own) and Redis (a database number of its own), and every process through ``scripts/entrypoint.sh``:
``migrate``, then ``web`` (``WEB_CONCURRENCY=2``), ``worker`` and ``beat``. Provisioning over the REST
API with the master key, traffic through ``web`` to the mock upstream over real HTTP, the ledger filled
by ``worker`` on ``beat``'s schedule, then SIGTERM to every process with requests in flight: those are
answered or cleanly refused, and every answered request is in the ledger exactly once.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
import psycopg
import pytest
import redis

from tests.support.mock_upstream import MockUpstream
from tests.support.production import (
    ProductionStack,
    base_venv_build,
    compose_healthcheck,
    production_env,
    redis_url_with_db,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"),
        reason="needs the real Postgres and Redis started by scripts/test.sh",
    ),
]

STACK_REDIS_DB = 13  # the suite's tests use db 0; the stack's stream and broker must not meet their leftovers
TRAFFIC = 300
IN_FLIGHT = 20  # slow requests held by the gateway when SIGTERM arrives
UPSTREAM_SECRET = "sk-upstream-" + secrets.token_hex(12)
HTTPS = {"X-Forwarded-Proto": "https"}  # as the TLS-terminating proxy sets it (production redirects plain HTTP)


@dataclass
class Outcome:
    status: int | None  # None: no response at all (connection refused or reset before an answer)
    request_id: str | None = None
    complete: bool = False
    error: str = ""

    @property
    def answered(self) -> bool:
        return self.status == 200 and self.complete

    @property
    def cleanly_refused(self) -> bool:
        return self.status is None or (self.status == 503 and self.complete)


async def chat(session: aiohttp.ClientSession, url: str, key: str, model: str, *, stream: bool) -> Outcome:
    body = {"model": model, "messages": [{"role": "user", "content": "parity check"}], "stream": stream}
    headers = {"Authorization": f"Bearer {key}"}
    outcome = None
    try:
        async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
            outcome = Outcome(response.status, response.headers.get("x-request-id"))
            data = await response.read()
    except (TimeoutError, aiohttp.ClientConnectionError) as exc:
        if outcome is not None:  # the answer started and was cut: never acceptable
            outcome.error = repr(exc)
            return outcome
        return Outcome(None, error=repr(exc))
    if stream and outcome.status == 200:
        outcome.complete = data.rstrip().endswith(b"data: [DONE]") and b"echo:" in data
    else:
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return outcome
        outcome.complete = "choices" in payload if outcome.status == 200 else "error" in payload
    return outcome


async def traffic(url: str, key: str, model: str, count: int, concurrency: int = 16) -> list[Outcome]:
    """``count`` requests, every third one streamed, ``concurrency`` at a time over keep-alive connections."""
    gate = asyncio.Semaphore(concurrency)

    async def one(session, i):
        async with gate:
            return await chat(session, url, key, model, stream=i % 3 == 0)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        return await asyncio.gather(*(one(session, i) for i in range(count)))


def api(stack: ProductionStack, method: str, path: str, body=None):
    """One REST call with the master key through the production web process."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        stack.url + path,
        data=orjson.dumps(body) if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {stack.env['GATEWAY_MASTER_KEY']}", "content-type": "application/json"}
        | HTTPS,
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def ready(stack: ProductionStack) -> bool:
    try:
        return api(stack, "GET", "/health/ready")[0] == 200
    except OSError:  # not listening yet
        return False


def ledger_request_ids(database_url: str) -> list[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return [row[0] for row in conn.execute("SELECT request_id FROM spend_spendlog")]


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory) -> Path:
    started = time.monotonic()
    bin_dir = base_venv_build(tmp_path_factory.mktemp("base-venv") / "venv")
    print(f"base.txt venv built in {time.monotonic() - started:.1f} s")
    return bin_dir


@pytest.fixture
def stack_database():
    """A database of its own on the suite's Postgres server, dropped afterwards."""
    server_url = os.environ["DATABASE_URL"]
    name = "gw_parity_" + secrets.token_hex(4)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(server_url)
    yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def stack_redis():
    url = redis_url_with_db(os.environ["REDIS_URL"], STACK_REDIS_DB)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()


@pytest.fixture
def stack(base_venv, stack_database, stack_redis, tmp_path):
    env = production_env(bin_dir=base_venv, database_url=stack_database, redis_url=stack_redis, workdir=tmp_path)
    production = ProductionStack(env, tmp_path)
    yield production
    production.close()


@pytest.fixture
def upstream():
    with MockUpstream() as server:
        yield server


def provision(stack: ProductionStack, upstream: MockUpstream) -> tuple[str, dict]:
    """Organization, team, two deployments on the mock upstream (one answers after 3 s), a key: all over REST."""
    status, org = api(stack, "POST", "/api/v1/organizations/", {"name": "Parity"})
    assert status == 201, org
    status, team = api(stack, "POST", "/api/v1/teams/", {"organization": org["id"], "name": "Prod"})
    assert status == 201, team
    for model_name, model in (("parity", "gpt-up"), ("parity-slow", "slow")):
        spec = {"model_name": model_name, "provider": "openai", "model": model, "api_base": upstream.url}
        spec |= {"api_key": UPSTREAM_SECRET, "input_cost_per_token": "0.000001", "output_cost_per_token": "0.000002"}
        status, deployment = api(stack, "POST", "/api/v1/deployments/", spec)
        assert status == 201, deployment
    status, key = api(stack, "POST", "/api/v1/keys/", {"team": team["id"], "alias": "parity"})
    assert status == 201, key
    return key["key"], key


def models_listed(stack: ProductionStack, key: str) -> set[str]:
    import urllib.request

    request = urllib.request.Request(stack.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return {m["id"] for m in orjson.loads(response.read())["data"]}


def rest_ledger(stack: ProductionStack, key_id: int) -> list[str]:
    """Every request id of the key's ledger through ``GET /api/v1/spend/logs/``, following the cursor."""
    ids, path = [], f"/api/v1/spend/logs/?key={key_id}&page_size=1000"
    while True:
        status, page = api(stack, "GET", path)
        assert status == 200, page
        ids += [row["request_id"] for row in page["results"]]
        if not page["next"]:
            return ids
        parts = urlsplit(page["next"])
        path = f"{parts.path}?{parts.query}"


async def shutdown_under_load(stack: ProductionStack, upstream: MockUpstream, key: str) -> tuple[list, list]:
    """SIGTERM web, worker and beat while ``IN_FLIGHT`` slow requests are held and new ones keep arriving."""
    timeout = aiohttp.ClientTimeout(total=90)
    stop = asyncio.Event()

    async def keep_calling(session, outcomes, stream):
        while not stop.is_set():
            outcomes.append(await chat(session, stack.url, key, "parity", stream=stream))

    def slow_seen() -> int:
        return sum(1 for r in list(upstream.requests) if r["body"].get("model") == "slow")

    async with (
        aiohttp.ClientSession(timeout=timeout) as held_session,
        # no keep-alive: each new request is a new connection, accepted or refused as a whole
        aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)) as fresh_session,
    ):
        held = [
            asyncio.create_task(chat(held_session, stack.url, key, "parity-slow", stream=i % 2 == 0))
            for i in range(IN_FLIGHT)
        ]
        late: list[Outcome] = []
        callers = [asyncio.create_task(keep_calling(fresh_session, late, i % 2 == 0)) for i in range(4)]
        deadline = time.monotonic() + 60
        while slow_seen() < IN_FLIGHT:  # all of them reached the upstream: the gateway holds them
            assert time.monotonic() < deadline, f"only {slow_seen()} slow requests arrived\n{stack.report()}"
            await asyncio.sleep(0.05)
        stack.terminate("web", "worker", "beat")
        await asyncio.sleep(1.5)  # requests keep arriving while web drains
        stop.set()
        await asyncio.gather(*callers)
        return await asyncio.gather(*held), late


def test_base_install_runs_every_process_and_loses_nothing(stack, upstream, stack_database):
    stack.migrate()
    stack.start("web")
    stack.wait_for(lambda: ready(stack), timeout=120, message="web never became ready", running=("web",))
    key, key_row = provision(stack, upstream)
    stack.wait_for(lambda: "parity-slow" in models_listed(stack, key), timeout=30, message="models never listed")

    # The worker alone ingests nothing: ingestion runs on beat's schedule (apps/spend/schedules.py).
    stack.start("worker")
    stack.wait_for(
        lambda: b" ready." in stack.log_of["worker"].read_bytes(),
        timeout=120,
        message="worker never became ready",
        running=("web", "worker"),
    )
    outcomes = asyncio.run(traffic(stack.url, key, "parity", TRAFFIC))
    failed = [o for o in outcomes if not o.answered]
    assert not failed, f"{len(failed)} of {TRAFFIC} failed, e.g. {failed[:3]}\n{stack.report()}"
    answered = {o.request_id for o in outcomes}
    assert len(answered) == TRAFFIC
    time.sleep(3)  # longer than the 2 s ingest interval
    assert ledger_request_ids(stack_database) == [], "something ingested without beat"

    stack.start("beat")
    stack.wait_for(
        lambda: len(ledger_request_ids(stack_database)) >= TRAFFIC,
        timeout=120,
        message="the worker did not fill the ledger on beat's schedule",
        running=("web", "worker", "beat"),
    )
    assert sorted(rest_ledger(stack, key_row["id"])) == sorted(answered)
    # The health checks deploy/ gives worker and beat (compose and kustomize) pass against the real ones.
    for name in ("worker", "beat"):
        result = stack.run(compose_healthcheck(name))
        assert result.returncode == 0, f"{name} health check failed:\n{result.stdout}{result.stderr}\n{stack.report()}"

    held, late = asyncio.run(shutdown_under_load(stack, upstream, key))
    codes = {name: stack.wait_exit(name, timeout=90) for name in ("web", "worker", "beat")}
    assert codes == {"web": 0, "worker": 0, "beat": 0}, stack.report()
    assert all(o.answered for o in held), f"in-flight requests were not answered: {held}\n{stack.report()}"
    unclean = [o for o in late if not (o.answered or o.cleanly_refused)]
    assert not unclean, f"requests cut or failed during shutdown: {unclean}\n{stack.report()}"
    answered |= {o.request_id for o in [*held, *late] if o.answered}
    refused = [o.error or str(o.status) for o in late if not o.answered]
    print(f"shutdown: {len(held)} held answered, {len(late) - len(refused)} late answered, refused: {refused}")

    assert stack.run(compose_healthcheck("worker")).returncode != 0, "the worker health check passes with no worker"

    # Spend of the requests answered during the drain waits in the Redis stream for the next worker.
    stack.start("worker")
    stack.start("beat")
    stack.wait_for(
        lambda: len(ledger_request_ids(stack_database)) >= len(answered),
        timeout=120,
        message="the restarted worker did not ingest what was answered before the stop",
        running=("worker", "beat"),
    )
    time.sleep(3)  # anything ingested twice or for an unanswered request would land now
    ledger = ledger_request_ids(stack_database)
    assert len(ledger) == len(set(ledger)) == len(answered), stack.report()
    assert set(ledger) == answered
    stack.terminate("worker", "beat")
    assert (stack.wait_exit("worker", timeout=60), stack.wait_exit("beat", timeout=60)) == (0, 0), stack.report()

    output = stack.all_output()
    for secret in (key, UPSTREAM_SECRET, stack.env["GATEWAY_MASTER_KEY"], stack.env["DJANGO_SECRET_KEY"]):
        assert secret not in output, "a secret reached a process log"
