"""The production install as the image runs it, on this machine: a venv of ``requirements/base.txt`` alone,
production settings, and every process started through ``scripts/entrypoint.sh``.

The suite's own venv has the dev packages, so a module that only a dev package brings in (``packaging``
for kombu's Redis transport, once) goes unnoticed there; this venv has nothing but the runtime lock.
Processes run from the repository root (the image's WORKDIR) with a clean environment: no PYTHONPATH,
no suite venv on PATH, only what an operator sets.
"""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

from tests.support.processes import ROOT, free_port, kill_process_group

ENTRYPOINT = ROOT / "scripts" / "entrypoint.sh"
# Production settings refuse secrets shorter than this.
SECRET_LENGTH = 48


def base_venv_build(dest: Path, requirements: Path = ROOT / "requirements" / "base.txt") -> Path:
    """A fresh venv with ``requirements`` and nothing else; returns its ``bin`` directory.

    ``--without-pip`` plus the suite's pip pointed at the new interpreter (``pip --python``) keeps
    pip itself (and the setuptools ensurepip adds on 3.11) out of it, and pip's cache keeps it fast.
    Once the lock carries hashes it is installed as the Dockerfile does: ``--no-deps --require-hashes``,
    so a package missing from the closure is missing here too.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    python = dest / "bin" / "python"
    command = [sys.executable, "-m", "pip", "--python", str(python), "install", "--disable-pip-version-check", "-q"]
    if "--hash=" in requirements.read_text():  # the complete lock: installed as the Dockerfile does
        command += ["--no-deps", "--require-hashes"]
    result = subprocess.run([*command, "-r", str(requirements)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        noise = "is ignored: it is neither a file nor a directory"  # this machine's unused index locations
        errors = "\n".join(line for line in result.stderr.splitlines() if noise not in line)
        raise RuntimeError(f"pip install -r {requirements.name} failed:\n{result.stdout}\n{errors}")
    return dest / "bin"


def redis_url_with_db(url: str, db: int) -> str:
    """The same Redis server, another database number: the stack's broker and stream stay apart from the suite's."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


def production_env(*, bin_dir: Path, database_url: str, redis_url: str, workdir: Path, **extra: str) -> dict[str, str]:
    """A complete production environment, as an operator would set it on the container, nothing inherited."""
    return {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",  # the image sets it; logs are complete when a test reads them
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings.production",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(SECRET_LENGTH),
        "GATEWAY_SECRET_KEY": secrets.token_urlsafe(SECRET_LENGTH),
        "GATEWAY_MASTER_KEY": "sk-master-" + secrets.token_urlsafe(SECRET_LENGTH),
        "METRICS_TOKEN": secrets.token_urlsafe(SECRET_LENGTH),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        **extra,
    }


class ProductionStack:
    """``scripts/entrypoint.sh migrate|web|worker|beat`` as child processes, each logging to its own file.

    Signals go to the process itself, as ``docker stop`` sends SIGTERM to the container's PID 1 (the
    entrypoint execs the server, so that is uvicorn or celery); ``close()`` kills whatever is left.
    """

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "PORT": str(self.port), "WEB_CONCURRENCY": "2"}
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen] = {}  # the latest of each name
        self._started: list[subprocess.Popen] = []
        self.logs: list[Path] = []  # every log, in start order
        self.log_of: dict[str, Path] = {}  # the latest log of each name
        self._files: list[IO[bytes]] = []

    def start(self, name: str) -> subprocess.Popen:
        """Start one process; each container has its own /tmp, so each gets its own metrics directory."""
        log_path = self.workdir / f"{name}-{len(self.logs) + 1}.log"
        log = open(log_path, "wb")  # noqa: SIM115 (closed in close())
        self._files.append(log)
        self.logs.append(log_path)
        self.log_of[name] = log_path
        env = {**self.env, "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"prometheus-{name}-{len(self.logs)}")}
        process = subprocess.Popen(
            [str(ENTRYPOINT), name], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes[name] = process
        self._started.append(process)
        return process

    def migrate(self, timeout: float = 300) -> None:
        process = self.start("migrate")
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"migrate did not finish in {timeout:.0f} s\n{self.report()}") from None
        assert process.returncode == 0, f"migrate exited {process.returncode}\n{self.report()}"

    def run(self, command: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
        """A one-off command in a running "container" (a health check), with the processes' environment."""
        env = {**self.env, "HOSTNAME": socket.gethostname()}  # Docker and Kubernetes set it; Celery names nodes by it
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)

    def assert_running(self, *names: str) -> None:
        for name in names:
            process = self.processes[name]
            if process.poll() is not None:
                raise AssertionError(f"{name} exited ({process.returncode}) while it should run\n{self.report()}")

    def wait_for(self, predicate, *, timeout: float, message: str, running: tuple[str, ...] = ()):
        """Poll ``predicate`` until it returns something truthy; fail early when a process that should run died."""
        deadline = time.monotonic() + timeout
        while True:
            self.assert_running(*running)
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{message} (after {timeout:.0f} s)\n{self.report()}")
            time.sleep(0.25)

    def terminate(self, *names: str) -> None:
        for name in names:
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def wait_exit(self, name: str, timeout: float) -> int:
        try:
            return self.processes[name].wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} still runs {timeout:.0f} s after SIGTERM\n{self.report()}") from None

    def report(self, tail: int = 4000) -> str:
        """The end of every process's log, for assertion messages (this is what shows on a CI failure)."""
        parts = []
        for path in self.logs:
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"----- {path.name} (last {tail} chars of {path}) -----\n{text[-tail:]}")
        return "\n".join(parts)

    def all_output(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.logs if path.exists())

    def close(self) -> None:
        for process in self._started:
            kill_process_group(process)
        for log in self._files:
            log.close()


def compose_healthcheck(service: str) -> list[str]:
    """The health check command of ``service`` in deploy/docker-compose.yml, as an argv to run here."""
    import yaml

    test = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())["services"][service]["healthcheck"][
        "test"
    ]
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", test[1].replace("$$", "$")]  # $$ is Compose's escape for a literal $
    assert test[0] == "CMD", test
    return test[1:]
