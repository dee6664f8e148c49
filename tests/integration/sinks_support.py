"""Real receivers for the log sink tests: an HTTP endpoint and a Langfuse-shaped API in a thread, moto's S3 server
as a separate process on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import botocore.session
import orjson
from aiohttp import web

from tests.support.processes import ServerProcess, free_port
from tests.support.threaded_app import ThreadedApp


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return orjson.loads(self.body)


def verify_signature(secret: str, received: Received, *, max_age: float = 300) -> bool:
    """What docs/operations.md tells a receiver to do: recompute the HMAC, compare in constant time, refuse old."""
    timestamp = received.headers["X-Gateway-Timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + received.body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) <= max_age
    return fresh and hmac.compare_digest(received.headers["X-Gateway-Signature"], f"sha256={expected}")


class SinkReceiver(ThreadedApp):
    """``POST /hook`` (an HTTP sink) and ``POST /api/public/ingestion`` (Langfuse, basic auth checked).

    ``status`` is what /hook answers (500: a failing sink); ``delay`` how long it waits first (a hanging one).
    Langfuse requests with wrong credentials get 401; events without the documented envelope are refused
    per event in the 207 answer, as Langfuse does.
    """

    runner_options = {"access_log": None}

    def __init__(self, *, status: int = 200, delay: float = 0.0, langfuse_keys: tuple[str, str] = ("", "")) -> None:
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}"
        self.status = status
        self.delay = delay
        self.langfuse_keys = langfuse_keys
        self.hooks: list[Received] = []
        self.langfuse: list[Received] = []
        self.refused_events: list[dict] = []
        self._lock = threading.Lock()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.hooks.append(Received(dict(request.headers), body))
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response({"ok": self.status < 400}, status=self.status)

    async def _ingestion(self, request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(":".join(self.langfuse_keys).encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"message": "Invalid credentials"}, status=401)
        body = await request.read()
        batch = orjson.loads(body).get("batch")
        if not isinstance(batch, list):
            return web.json_response({"message": "batch must be a list"}, status=400)
        successes, errors = [], []
        for event in batch:
            ok = isinstance(event.get("id"), str) and event.get("type") in ("trace-create", "generation-create")
            ok = ok and isinstance(event.get("timestamp"), str) and isinstance(event.get("body"), dict)
            (successes if ok else errors).append({"id": event.get("id"), "status": 201 if ok else 400})
            if not ok:
                self.refused_events.append(event)
        with self._lock:
            self.langfuse.append(Received(dict(request.headers), body))
        return web.json_response({"successes": successes, "errors": errors}, status=207)

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_post("/api/public/ingestion", self._ingestion)
        return app

    def records(self) -> list[dict]:
        with self._lock:
            return [record for received in self.hooks for record in received.json["records"]]

    def langfuse_events(self) -> list[dict]:
        with self._lock:
            return [event for received in self.langfuse for event in received.json["batch"]]


class MotoS3(ServerProcess):
    """moto in server mode: an S3-compatible server as its own process on a loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        env = {"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1", "PYTHONUNBUFFERED": "1"}
        super().__init__(command, env=env, ready_url=self.url + "/moto-api/", log_path=workdir / "moto.log")

    def client(self):

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="test-access",
            aws_secret_access_key="test-secret",
        )

    def objects(self, bucket: str) -> dict[str, bytes]:
        client = self.client()
        listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}
