"""Postgres stopped for 10 s under traffic (issue 13, item 3), end to end.

A dedicated Postgres (the suite's must not be stopped), migrated and provisioned over REST; two uvicorn
workers, a Celery worker with beat, a real upstream, 16 clients with a key the gateway has already seen.
While the database is down:
- the cached key keeps working: every one of its requests is answered 200 (no 500, no 401);
- a key that exists but was never seen by the gateway gets a clean 503 in the OpenAI error shape with
  ``retry-after`` (the gateway cannot check it), never a 500 or a 401 (which would tell a client its
  valid key is wrong);
and once it is back, ingestion resumes by itself and every answered request is in the ledger exactly once.
Measured on main before this test existed: all of that held (43,042 of 43,042 in the ledger).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Mapping

import aiohttp
import pytest
import redis
from django.conf import settings

from tests.integration.fault_support import Traffic, ledger_counts, provision, wait_for_ledger
from tests.integration.spend_processes import CeleryWorker, Gateway, OpenAIUpstream, wait_until
from tests.support.postgres_server import PostgresServer
from tests.support.processes import ROOT, child_env
from tests.support.production import redis_url_with_db

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs redis-server and Postgres binaries (scripts/test.sh)"),
]

OUTAGE_SECONDS = 10.0
REDIS_DB = 12  # the suite's tests use db 0: this stack's stream and broker stay apart


@pytest.fixture
def own_postgres():
    with PostgresServer() as server:
        yield server


@pytest.fixture
def stack_redis():
    url = redis_url_with_db(settings.REDIS_URL, REDIS_DB)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def upstream():
    with OpenAIUpstream() as server:
        yield server


def migrate(env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


async def one_chat(url: str, secret: str, model: str) -> tuple[int, Mapping[str, str], dict]:
    body = {"model": model, "messages": [{"role": "user", "content": "first time"}]}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}) as r,
    ):
        return r.status, r.headers.copy(), await r.json(content_type=None)  # (case-insensitive)


async def test_postgres_stopped_ten_seconds_under_traffic(own_postgres, stack_redis, upstream, tmp_path):
    database = own_postgres.url
    migrate(child_env(DATABASE_URL=database, REDIS_URL=stack_redis))
    env = {"DATABASE_URL": database, "REDIS_URL": stack_redis}
    worker = CeleryWorker(tmp_path, **env)
    with Gateway(tmp_path, workers=2, **env) as gateway:
        seen, unseen = provision(gateway.url, gateway.master_key, upstream.url, "pg-fault", ["seen", "unseen"])
        worker.start()
        try:
            traffic = Traffic(gateway.url, seen["key"], "pg-fault")
            outage: dict[str, float] = {}
            unseen_during: list = []

            async def scenario() -> None:
                await asyncio.sleep(4)  # every worker has the key and the model registry cached
                # The worker and its embedded beat (which reads its schedule from this database) are up
                # and ingesting before the outage: on a loaded machine booting can outlast the 4 s, and a
                # beat started during the outage exits (production's orchestrator restarts a lone beat;
                # the embedded one here would not come back), which is not the fault under test.
                await asyncio.to_thread(
                    wait_until, lambda: bool(ledger_counts(database)), timeout=120,
                    message="nothing ingested before the outage", worker=worker,
                )  # fmt: skip
                outage["start"] = time.monotonic()
                await asyncio.to_thread(own_postgres.stop)
                outage["stopped"] = time.monotonic()
                await asyncio.sleep(2)
                for _ in range(3):  # a key the gateway never saw, while it cannot ask the database
                    unseen_during.append(await one_chat(gateway.url, unseen["key"], "pg-fault"))
                await asyncio.sleep(max(0.0, outage["stopped"] + OUTAGE_SECONDS - time.monotonic()))
                await asyncio.to_thread(own_postgres.start)
                outage["end"] = time.monotonic()
                await asyncio.sleep(4)  # traffic goes on after the database is back

            await traffic.run(scenario)
            unseen_after = await one_chat(gateway.url, unseen["key"], "pg-fault")

            answered = traffic.answered()
            seconds = wait_for_ledger(database, answered, timeout=180, hint=worker.log_tail)
            counts = ledger_counts(database)
        finally:
            worker.stop()
        gateway_log = gateway.output()

    during = traffic.statuses(outage["stopped"], outage["end"])
    print(
        f"\n{len(traffic.answers)} requests from 16 clients, {sum(during.values())} during the "
        f"{outage['end'] - outage['stopped']:.1f} s outage: {dict(during)}; all: {dict(traffic.statuses())}; "
        f"{len(answered)} answered, all in the ledger {seconds:.1f} s after the traffic stopped"
    )
    assert not traffic.errors, traffic.errors[:5]
    assert set(traffic.statuses()) == {200}, (traffic.statuses(), gateway_log)  # the cached key never noticed
    assert sum(during.values()) > 100, during  # and really was served while Postgres was down
    for status, headers, body in unseen_during:
        assert status == 503, (status, body, gateway_log)
        assert body["error"]["type"] == "api_error" and "retry shortly" in body["error"]["message"], body
        assert headers.get("retry-after") == "1", dict(headers)
    assert unseen_after[0] == 200, unseen_after  # and the same key works once the database is back
    mine = {request_id: n for request_id, n in counts.items() if request_id in answered}
    assert len(mine) == len(answered) and set(mine.values()) == {1}, "a request in the ledger twice"
    assert "Traceback" not in gateway_log.split("key lookup failed", 1)[-1], gateway_log  # one traceback at most
