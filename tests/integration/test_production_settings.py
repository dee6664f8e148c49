"""Production settings as an operator meets them: real processes started the way the image starts them.

- With an incomplete or weak environment every entry point (manage.py, uvicorn, celery, the image's
  entrypoint) refuses to start with one message naming every problem, no traceback, nothing written.
- With a complete one, a real uvicorn with ``DJANGO_ALLOWED_HOSTS=gw.example.com`` answers the health
  probes whatever the Host header (the Dockerfile's own HEALTHCHECK command succeeds), still answers 400
  to a bad Host everywhere else, and serves /metrics only with the operator's bearer.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest
from django.conf import settings

from tests.support.processes import ROOT, ServerProcess, child_env, free_port, uvicorn_command

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

PRODUCTION = "gateway_project.settings.production"
VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "DJANGO_SECRET_KEY",
    "GATEWAY_SECRET_KEY",
    "GATEWAY_MASTER_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "METRICS_TOKEN",
)
HEADLINE = f"{PRODUCTION} refuses to start"
BIN = Path(sys.executable).parent


def _bare_env(run_dir: Path, **values: str) -> dict[str, str]:
    """This environment without any production variable, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env.update(
        DJANGO_SETTINGS_MODULE=PRODUCTION,
        GATEWAY_RUN_DIR=str(run_dir),
        PROMETHEUS_MULTIPROC_DIR=str(run_dir.parent / "prometheus"),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
        WEB_CONCURRENCY="2",
        PORT=str(free_port()),
    )
    env.update(values)
    return env


ENTRY_POINTS = {
    "manage.py check --deploy": [sys.executable, "manage.py", "check", "--deploy"],
    "import gateway_project.asgi": [sys.executable, "-c", "import gateway_project.asgi"],
    "uvicorn": uvicorn_command(0),
    # As the image starts them. web with WEB_CONCURRENCY=2: the settings are checked once before uvicorn
    # forks, so one message and a failing status (uvicorn's supervisor itself would exit 0).
    "entrypoint.sh migrate": ["scripts/entrypoint.sh", "migrate"],
    "entrypoint.sh web": ["scripts/entrypoint.sh", "web"],
    "entrypoint.sh worker": ["scripts/entrypoint.sh", "worker"],
    "entrypoint.sh beat": ["scripts/entrypoint.sh", "beat"],
}


def _start(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def _assert_refused(result: subprocess.CompletedProcess, run_dir: Path) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert "Traceback" not in output, output
    assert output.count(HEADLINE) == 1, output
    assert not run_dir.exists(), "nothing (no SQLite file, no generated secret) may be written under .run/"
    return result.stderr


@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
def test_every_entry_point_refuses_an_empty_environment_with_one_message(entry_point, tmp_path):
    run_dir = tmp_path / "run"
    stderr = _assert_refused(_start(ENTRY_POINTS[entry_point], _bare_env(run_dir)), run_dir)
    problems = [line for line in stderr.splitlines() if line.startswith("  - ")]
    assert [line.split()[1] for line in problems] == list(VARIABLES), stderr
    assert all("is not set" in line for line in problems), stderr


def test_weak_values_are_all_named_and_never_echoed(tmp_path):
    run_dir = tmp_path / "run"
    master = "sk-master-" + secrets.token_hex(16)
    weak = {
        "DATABASE_URL": f"sqlite:///{run_dir}/gateway.sqlite3",
        "REDIS_URL": "localhost:6379",
        "DJANGO_SECRET_KEY": "s3cr3t-" + "x" * 30,  # 37 characters: Django's deploy check wants 50
        "GATEWAY_SECRET_KEY": "pepper",
        "GATEWAY_MASTER_KEY": master,
        "DJANGO_ALLOWED_HOSTS": " , ",
        "METRICS_TOKEN": master,
    }
    result = _start(ENTRY_POINTS["manage.py check --deploy"], _bare_env(run_dir, **weak))
    stderr = _assert_refused(result, run_dir)
    assert "DATABASE_URL must be a URL starting with postgres://, postgresql://" in stderr
    assert "(its scheme is 'sqlite') (production has no SQLite fallback)" in stderr
    assert "REDIS_URL must be a URL starting with redis://, rediss://, unix:// (its scheme is 'localhost')" in stderr
    assert "DJANGO_SECRET_KEY is too short (37 of at least 50 characters)" in stderr
    assert "GATEWAY_SECRET_KEY is too short (6 of at least 32 characters)" in stderr
    assert "DJANGO_ALLOWED_HOSTS is not set" in stderr
    assert "METRICS_TOKEN equals GATEWAY_MASTER_KEY" in stderr
    for value in (master, "pepper", "s3cr3t", str(run_dir)):
        assert value not in stderr, f"{value!r} echoed"


def test_a_malformed_typed_value_is_refused_cleanly_too(tmp_path):
    run_dir = tmp_path / "run"
    result = _start(ENTRY_POINTS["manage.py check --deploy"], _bare_env(run_dir, **_complete_env(), DEBUG="maybe"))
    stderr = _assert_refused(result, run_dir)
    assert "DEBUG='maybe' is not a boolean" in stderr


def _complete_env() -> dict[str, str]:
    return {
        "DATABASE_URL": "postgres://u@127.0.0.1:1/db",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
        "GATEWAY_SECRET_KEY": secrets.token_urlsafe(32),
        "GATEWAY_MASTER_KEY": "sk-" + secrets.token_urlsafe(32),
        "DJANGO_ALLOWED_HOSTS": "gw.example.com",
        "METRICS_TOKEN": secrets.token_urlsafe(32),
    }


def test_check_deploy_passes_with_a_complete_production_environment(tmp_path):
    result = _start(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        _bare_env(tmp_path / "run", **_complete_env()),
    )
    assert result.returncode == 0, result.stderr
    assert "no issues (0 silenced)" in result.stdout


# --- a production server behind a public host name ----------------------------------------------


def dockerfile_healthcheck() -> str:
    """The shell-form command of the Dockerfile's HEALTHCHECK (Docker runs it with ``/bin/sh -c``)."""
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(.+)$", text, flags=re.MULTILINE)
    assert match, "the Dockerfile has no HEALTHCHECK ... CMD line"
    return match.group(1)


def get(url: str, host: str, **headers: str) -> tuple[int, str, Message]:
    request = urllib.request.Request(url, headers={"Host": host, **headers})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace"), exc.headers


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture
def production_server(db, tmp_path):
    if not settings.REDIS_URL:
        pytest.skip("needs the Redis started by scripts/test.sh")
    port = free_port()
    metrics_token = secrets.token_urlsafe(32)
    env = child_env(
        DJANGO_SETTINGS_MODULE=PRODUCTION,
        DJANGO_ALLOWED_HOSTS="gw.example.com",  # the Dockerfile's example
        DJANGO_SECRET_KEY=secrets.token_urlsafe(48),
        GATEWAY_SECRET_KEY=secrets.token_urlsafe(32),
        GATEWAY_MASTER_KEY="sk-" + secrets.token_urlsafe(32),
        METRICS_TOKEN=metrics_token,
        GATEWAY_RUN_DIR=str(tmp_path / "run"),
        PORT=str(port),
    )
    base = f"http://127.0.0.1:{port}"
    # Ready when /health/live answers 200 to Host 127.0.0.1:<port>, i.e. not the allowed host.
    with ServerProcess(
        uvicorn_command(port), env=env, ready_url=f"{base}/health/live", log_path=tmp_path / "server.log"
    ) as server:
        server.base, server.env, server.metrics_token = base, env, metrics_token
        yield server
    assert "Traceback" not in server.output(), server.output()
    assert not (tmp_path / "run").exists(), "production wrote into the embedded default's run directory"


def test_the_dockerfile_healthcheck_passes_with_the_example_settings(production_server):
    result = subprocess.run(
        ["/bin/sh", "-c", dockerfile_healthcheck()],
        env={**production_server.env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("host", ["10.1.2.3:4000", "127.0.0.1", "[::1]:4000", "evil.example"])
def test_probes_answer_whatever_the_host_and_without_https_redirect(production_server, host):
    base = production_server.base
    assert get(f"{base}/health/live", host)[:2] == (200, '{"status": "ok"}')
    status, body, _ = get(f"{base}/health/ready", host)
    assert status == 200, body
    assert '"database": "ok"' in body and '"redis": "ok"' in body


def test_the_host_check_still_holds_everywhere_else(production_server):
    base = production_server.base
    for path in ("/admin/", "/admin/login/", "/api/v1/organizations/", "/api/docs/", "/health/live/x"):
        assert get(f"{base}{path}", "evil.example", **{"X-Forwarded-Proto": "https"})[0] == 400, path
        assert get(f"{base}{path}", "10.1.2.3:4000")[0] == 400, path
    # The allowed host passes the check: redirected to HTTPS over plain HTTP, to the login page over HTTPS.
    status, _, headers = get(f"{base}/admin/", "gw.example.com")
    assert (status, headers["Location"]) == (301, "https://gw.example.com/admin/")
    status, _, headers = get(f"{base}/admin/", "gw.example.com", **{"X-Forwarded-Proto": "https"})
    assert status == 302 and headers["Location"].startswith("/admin/login/")


def test_metrics_need_the_operators_bearer_whatever_the_host(production_server):
    base, token = production_server.base, production_server.metrics_token
    for host in ("10.1.2.3:4000", "gw.example.com"):
        status, _, headers = get(f"{base}/metrics", host)
        assert (status, headers.get("WWW-Authenticate")) == (401, 'Bearer realm="metrics"')
        assert get(f"{base}/metrics", host, Authorization="Bearer wrong")[0] == 401
        master = production_server.env["GATEWAY_MASTER_KEY"]
        assert get(f"{base}/metrics", host, Authorization=f"Bearer {master}")[0] == 401
        status, body, _ = get(f"{base}/metrics", host, Authorization=f"Bearer {token}")
        assert status == 200 and "gateway_requests_total" in body
