"""Real processes for the spend integration tests: a Celery worker (+ embedded beat) on the test database."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from django.conf import settings

from tests.support import processes
from tests.support.processes import (
    ROOT,
    ServerProcess,
    free_port,
    kill_process_group,
    spawn,
    stop_process_group,
    uvicorn_command,
)
from tests.support.threaded_app import ThreadedApp

__all__ = [
    "ROOT",
    "CeleryBeat",
    "CeleryWorker",
    "Gateway",
    "OpenAIUpstream",
    "child_env",
    "empty_spend_stream",
    "free_port",
    "wait_until",
]


def child_env(**extra: str) -> dict[str, str]:
    """The shared child environment, unbuffered so worker logs are complete when a test reads them."""
    return processes.child_env(**{"PYTHONUNBUFFERED": "1", **extra})


def empty_spend_stream() -> None:
    """Drop the shared Redis spend stream before a test starts a worker on it.

    Tests that only emit events (no worker draining them) leave entries behind; a worker started by a
    later test would ingest them into that test's database and break its ledger counts.
    """
    import redis

    from apps.spend.outbox import STREAM_KEY

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.delete(STREAM_KEY)
    finally:
        client.close()


class CeleryWorker:
    """``celery -A gateway_project worker -B`` in its own process group, logging to a file."""

    def __init__(self, workdir: Path, *, embedded_beat: bool = True, **env: str) -> None:
        self.workdir = workdir
        self.env = child_env(**env)
        self.embedded_beat = embedded_beat  # False: a separate ``CeleryBeat`` dispatches the periodic tasks
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.workdir / f"worker-{self.starts}.log", "wb")  # noqa: SIM115 (closed with the process)
        celery = Path(sys.executable).with_name("celery")
        beat = ["-B", "-s", str(self.workdir / "beat-schedule")] if self.embedded_beat else []
        self.proc = spawn(
            [str(celery), "-A", "gateway_project", "worker", "--pool=solo", "--loglevel=INFO",
             "-n", f"spend-test-{self.starts}@%h", *beat],
            env=self.env,
            log=log,
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown code runs."""
        kill_process_group(self.proc)

    def stop(self) -> None:
        stop_process_group(self.proc, timeout=15)

    def log_tail(self) -> str:
        path = self.workdir / f"worker-{self.starts}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


class CeleryBeat(CeleryWorker):
    """``celery -A gateway_project beat`` on its own (django-celery-beat's DatabaseScheduler), as production runs it."""

    def start(self) -> None:
        self.starts += 1
        log = open(self.workdir / f"beat-{self.starts}.log", "wb")  # noqa: SIM115 (closed with the process)
        celery = Path(sys.executable).with_name("celery")
        self.proc = spawn(
            [str(celery), "-A", "gateway_project", "beat", "--loglevel=INFO", "-s", str(self.workdir / "beat-db")],
            env=self.env,
            log=log,
        )

    def log_tail(self) -> str:
        path = self.workdir / f"beat-{self.starts}.log"
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


class OpenAIUpstream(ThreadedApp):
    """A local OpenAI-compatible upstream in a thread: every chat answer reports 5 prompt + 1 completion tokens."""

    runner_options = {"access_log": None}

    def __init__(self) -> None:
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.Response:
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

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        return app


class Gateway(ServerProcess):
    """``uvicorn gateway_project.asgi:application --workers N`` on a free port with the test database."""

    def __init__(self, workdir: Path, workers: int = 2, **env: str) -> None:
        import secrets

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.master_key = "sk-master-" + secrets.token_hex(12)
        self.workdir = workdir
        self.workers = workers
        super().__init__(
            uvicorn_command(self.port, workers),
            env=child_env(
                GATEWAY_MASTER_KEY=self.master_key,
                GATEWAY_SECRET_KEY=settings.GATEWAY_SECRET_KEY,
                DJANGO_SECRET_KEY=settings.SECRET_KEY,
                GATEWAY_RUN_DIR=str(workdir / "run"),
                RATELIMIT_REDIS_TIMEOUT_MS="3000",
                RATELIMIT_FAIL_MODE="closed",
                # These stacks test the ledger, not overload: on a loaded machine shedding would answer
                # some requests with 503s. A test about shedding passes its own value.
                **{"PROXY_SHED_LOOP_LAG_MS": "0", **env},
            ),
            ready_url=self.url + "/health/live",
            log_path=workdir / "gateway.log",
        )

    @property
    def proc(self):
        return self.process
