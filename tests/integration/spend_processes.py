"""Real processes for the spend integration tests: a Celery worker (+ embedded beat) on the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def test_database_url() -> str:
    """The URL of the database pytest-django created, so child processes see the same rows."""
    s = connection.settings_dict
    host, port, user, name = s["HOST"] or "127.0.0.1", s["PORT"] or 5432, s["USER"], s["NAME"]
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{host}:{port}/{name}"


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="gateway_project.settings.test",
        DATABASE_URL=test_database_url(),
        REDIS_URL=settings.REDIS_URL,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class CeleryWorker:
    """``celery -A gateway_project worker -B`` in its own process group, logging to a file."""

    def __init__(self, workdir: Path, **env: str) -> None:
        self.workdir = workdir
        self.env = child_env(**env)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.workdir / f"worker-{self.starts}.log", "wb")  # noqa: SIM115 (closed with the process)
        celery = Path(sys.executable).with_name("celery")
        self.proc = subprocess.Popen(
            [str(celery), "-A", "gateway_project", "worker", "--pool=solo", "-B", "--loglevel=INFO",
             "-n", f"spend-test-{self.starts}@%h", "-s", str(self.workdir / "beat-schedule")],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown code runs."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self) -> str:
        path = self.workdir / f"worker-{self.starts}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def wait_until(predicate: Callable[[], bool], *, timeout: float, message: str, worker: CeleryWorker | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if worker and worker.proc and worker.proc.poll() is not None:
            raise AssertionError(f"worker exited ({worker.proc.returncode}):\n{worker.log_tail()}")
        time.sleep(0.1)
    raise AssertionError(f"{message}\n{worker.log_tail() if worker else ''}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OpenAIUpstream:
    """A local OpenAI-compatible upstream in a thread: every chat answer reports 5 prompt + 1 completion tokens."""

    def __init__(self) -> None:
        import asyncio
        import threading

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _chat(self, request):
        from aiohttp import web

        body = await request.json()
        if body.get("model") == "fail":
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
        return web.json_response(
            {
                "id": "chatcmpl-spend",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
            }
        )

    def _run(self) -> None:
        import asyncio

        from aiohttp import web

        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> OpenAIUpstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("upstream did not start")
        return self

    def __exit__(self, *exc) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class Gateway:
    """``uvicorn gateway_project.asgi:application --workers N`` on a free port with the test database."""

    def __init__(self, workdir: Path, workers: int = 2, **env: str) -> None:
        import secrets

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.master_key = "sk-master-" + secrets.token_hex(12)
        self.workdir = workdir
        self.workers = workers
        self.env = child_env(
            GATEWAY_MASTER_KEY=self.master_key,
            GATEWAY_SECRET_KEY=settings.GATEWAY_SECRET_KEY,
            DJANGO_SECRET_KEY=settings.SECRET_KEY,
            GATEWAY_RUN_DIR=str(workdir / "run"),
            RATELIMIT_REDIS_TIMEOUT_MS="3000",
            RATELIMIT_FAIL_MODE="closed",
            **env,
        )
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Gateway:
        import urllib.request

        log = open(self.workdir / "gateway.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "gateway_project.asgi:application", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(self.workers), "--no-access-log", "--log-level", "warning"],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited: {self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health/live", timeout=2):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"uvicorn did not start: {self.output()}")

    def output(self) -> str:
        return (self.workdir / "gateway.log").read_text(errors="replace")[-4000:]

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
