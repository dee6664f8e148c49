"""Shared pieces of the fault-catalogue tests (issue 13, item 3): continuous client traffic that records
every answer, REST provisioning with the master key, and reading a ledger straight from Postgres."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson
import psycopg


@dataclass(slots=True)
class Answer:
    started: float  # monotonic
    seconds: float
    status: int
    request_id: str
    body: bytes


@dataclass
class Traffic:
    """``clients`` loops, each sending one chat request after another with ``secret`` until stopped."""

    url: str
    secret: str
    model: str
    clients: int = 16
    answers: list[Answer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    running: bool = True

    async def client(self, session: aiohttp.ClientSession) -> None:
        body = {"model": self.model, "messages": [{"role": "user", "content": "fault catalogue"}]}
        headers = {"Authorization": f"Bearer {self.secret}"}
        while self.running:
            started = time.monotonic()
            try:
                async with session.post(f"{self.url}/v1/chat/completions", json=body, headers=headers) as response:
                    data = await response.read()
                    request_id = response.headers.get("x-request-id", "")
                    self.answers.append(Answer(started, time.monotonic() - started, response.status, request_id, data))
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.errors.append(f"{exc.__class__.__name__}: {exc}")
                await asyncio.sleep(0.05)

    async def run(self, scenario) -> None:
        """Traffic runs while ``scenario()`` does; stops (and waits for answers in flight) when it returns."""
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
            clients = [asyncio.ensure_future(self.client(session)) for _ in range(self.clients)]
            try:
                await scenario()
            finally:
                self.running = False
                await asyncio.gather(*clients)

    def answered(self) -> set[str]:
        """Request ids of the successful answers: what the ledger must hold, each exactly once."""
        return {a.request_id for a in self.answers if a.status == 200}

    def statuses(self, since: float = 0.0, until: float = float("inf")) -> Counter:
        return Counter(a.status for a in self.answers if since <= a.started < until)


def rest(base_url: str, master_key: str, method: str, path: str, body=None) -> tuple[int, dict | str]:
    request = urllib.request.Request(
        base_url + path,
        data=orjson.dumps(body) if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {master_key}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def provision(base_url: str, master_key: str, upstream_url: str, model_name: str, aliases: list[str]) -> list[dict]:
    """An organization, a team, one deployment on ``upstream_url`` and a key per alias, all over REST."""
    status, org = rest(base_url, master_key, "POST", "/api/v1/organizations/", {"name": "Faults"})
    assert status == 201, org
    status, team = rest(base_url, master_key, "POST", "/api/v1/teams/", {"organization": org["id"], "name": "Ops"})
    assert status == 201, team
    spec = {"model_name": model_name, "provider": "openai", "model": "ok", "api_base": upstream_url}
    spec |= {"api_key": "sk-upstream-fault", "input_cost_per_token": "0.000001", "output_cost_per_token": "0.000002"}
    status, deployment = rest(base_url, master_key, "POST", "/api/v1/deployments/", spec)
    assert status == 201, deployment
    keys = []
    for alias in aliases:
        status, key = rest(base_url, master_key, "POST", "/api/v1/keys/", {"team": team["id"], "alias": alias})
        assert status == 201, key
        keys.append(key)
    return keys


def ledger_counts(database_url: str) -> Counter:
    """request id -> how many ledger rows it has, read straight from that database."""
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        return Counter(dict(conn.execute("SELECT request_id, count(*) FROM spend_spendlog GROUP BY request_id")))


def wait_for_ledger(database_url: str, answered: set[str], *, timeout: float, hint=lambda: "") -> float:
    """Seconds until every answered request is in the ledger; fails with what is missing after ``timeout``."""
    started = time.monotonic()
    counts: Counter = Counter()
    while time.monotonic() - started < timeout:
        try:
            counts = ledger_counts(database_url)
        except psycopg.OperationalError:
            counts = Counter()
        if answered <= set(counts):
            return time.monotonic() - started
        time.sleep(0.5)
    missing = answered - set(counts)
    raise AssertionError(f"{len(missing)} of {len(answered)} answered requests not in the ledger\n{hint()}")
