"""requirements/base.txt alone runs every production process: it is the complete, hashed closure.

The image installs base.txt only, while CI's venv comes from dev.txt, whose extra packages can hide a
missing runtime dependency (kombu's Redis transport imports ``packaging``: a worker built from an
incomplete base.txt died at start while every other test stayed green). So this builds a fresh venv
from base.txt exactly as the Dockerfile does (``--no-deps --require-hashes``: nothing unlisted gets
in), then starts each process's entry point in it with production settings against the suite's real
Postgres and Redis. The venv is new on every run, for honesty; pip's wheel cache keeps it quick.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.support.processes import ROOT, database_url
from tests.support.production import production_env as production_environment

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]

LOCK = ROOT / "requirements" / "base.txt"


def _run(command: list[str], *, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("base-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    install += ["--no-deps", "--require-hashes", "-r", str(LOCK)]
    # Generous: a cold pip cache downloads every wheel, on a machine shared by the whole team.
    result = _run(install, env=dict(os.environ), timeout=1200)
    assert result.returncode == 0, f"base.txt does not install with --no-deps --require-hashes: {_explain(result)}"
    return venv


@pytest.fixture(scope="module")
def production_env(base_venv) -> dict[str, str]:
    """Only what a production container has: the venv on PATH, production settings, real services."""
    workdir = base_venv.parent
    metrics_dir = workdir / "prometheus"
    metrics_dir.mkdir(exist_ok=True)  # as scripts/entrypoint.sh does before every process
    env = production_environment(
        bin_dir=base_venv / "bin", database_url=database_url(), redis_url=settings.REDIS_URL, workdir=workdir
    )
    return {**env, "PYTHONPATH": str(ROOT), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}


def _python(env: dict[str, str], code: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return _run(["python", "-c", code], env=env, timeout=timeout)  # the venv's python: first on PATH


def test_base_lock_is_consistent(production_env):
    result = _run(["pip", "check"], env=production_env, timeout=120)
    assert result.returncode == 0, _explain(result)


def test_web_entry_point_imports(production_env):
    # What `scripts/entrypoint.sh web` runs: uvicorn with uvloop and httptools, serving the ASGI app.
    code = (
        "import httptools, uvloop\n"
        "from uvicorn.importer import import_from_string\n"
        "app = import_from_string('gateway_project.asgi:application')\n"
        "print('web ok', callable(app))\n"
    )
    result = _python(production_env, code)
    assert result.returncode == 0, _explain(result)
    assert "web ok True" in result.stdout


def test_worker_connects_to_the_redis_broker(production_env):
    # `celery -A gateway_project worker`: the app, its tasks and a real connection through kombu's
    # Redis transport (which is what imports `packaging`).
    code = (
        "import kombu.transport.redis\n"
        "from gateway_project.celery import app\n"
        "app.loader.import_default_modules()\n"
        "assert app.conf.broker_url.startswith('redis://'), app.conf.broker_url\n"
        "with app.connection_for_write() as conn:\n"
        "    conn.ensure_connection(max_retries=3)\n"
        "    print('worker ok', conn.transport_cls)\n"
    )
    result = _python(production_env, code)
    assert result.returncode == 0, _explain(result)
    assert "worker ok redis" in result.stdout


def test_beat_scheduler_imports(production_env):
    # `celery -A gateway_project beat --scheduler django_celery_beat.schedulers:DatabaseScheduler`.
    code = (
        "from gateway_project.celery import app\n"
        "from celery.utils.imports import symbol_by_name\n"
        "import django; django.setup()\n"
        "cls = symbol_by_name('django_celery_beat.schedulers:DatabaseScheduler')\n"
        "print('beat ok', cls.__name__)\n"
    )
    result = _python(production_env, code)
    assert result.returncode == 0, _explain(result)
    assert "beat ok DatabaseScheduler" in result.stdout


def test_manage_py_check_passes(production_env):
    # `scripts/entrypoint.sh migrate` runs manage.py: every installed app and system check loads.
    result = _run(["python", "manage.py", "check"], env=production_env, timeout=180)
    assert result.returncode == 0, _explain(result)
