"""Real child processes for the tests: a uvicorn gateway or a Celery worker on the test database.

One place for what every process-level test repeated: a free loopback port, the URL of the database
pytest-django created (so the child sees the committed rows), the uvicorn command line, starting in a
new session with the output in a log file, waiting for ``/health/live`` and stopping the whole process
group (uvicorn's workers and Celery's beat included) so nothing outlives the test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The URL of the database pytest-django created, so child processes see the same rows."""
    from django.db import connection

    s = connection.settings_dict
    host, port, user, name = s["HOST"] or "127.0.0.1", s["PORT"] or 5432, s["USER"], s["NAME"]
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{host}:{port}/{name}"


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a gateway child process: this test's database, Redis and peppers, plus ``extra``.

    The same peppers matter: a key the test created must hash the same in the server.
    """
    from django.conf import settings

    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings.test",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "GATEWAY_SECRET_KEY": settings.GATEWAY_SECRET_KEY,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def uvicorn_command(port: int, workers: int = 1, *, access_log: bool = False) -> list[str]:
    """``uvicorn gateway_project.asgi:application`` on 127.0.0.1:port, quiet unless something goes wrong."""
    command = [sys.executable, "-m", "uvicorn", "gateway_project.asgi:application", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(workers), "--log-level", "warning"]
    return command if access_log else [*command, "--no-access-log"]


def stop_process_group(process: subprocess.Popen | None, timeout: float = 20) -> None:
    """SIGTERM the process group (graceful shutdown), SIGKILL it if it is still there after ``timeout``."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_process_group(process)


def kill_process_group(process: subprocess.Popen | None) -> None:
    """SIGKILL the process group: no shutdown code runs."""
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def spawn(command: list[str], *, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen:
    """Start ``command`` from the repository root in its own session, stdout and stderr into ``log``."""
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


class ServerProcess:
    """A server subprocess as a context manager: ready once ``ready_url`` answers, its group stopped on exit.

    The output goes to ``log_path``; ``output()`` gives its tail for assertion messages.
    """

    def __init__(
        self,
        command: list[str],
        *,
        env: dict[str, str],
        ready_url: str,
        log_path: str | Path,
        start_timeout: float = 90,
        tail: int = 4000,
    ) -> None:
        self.command = command
        self.env = env
        self.ready_url = ready_url
        self.log_path = Path(log_path)
        self.start_timeout = start_timeout
        self.tail = tail
        self.process: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self):
        self._log = open(self.log_path, "wb")
        self.process = spawn(self.command, env=self.env, log=self._log)
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}): {self.output()}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not become ready: {self.output()}")

    def output(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-self.tail :]

    def __exit__(self, *exc) -> None:
        stop_process_group(self.process)
        if self._log is not None:
            self._log.close()
