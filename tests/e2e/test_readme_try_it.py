"""The README's "Try it" block, run as written on a copy of the repository, answers the curl with a completion.

A newcomer pastes ``scripts/run.sh &`` and the curl into a shell on a fresh clone: the curl must not run
before the server is up (the first run installs for a minute or two), so the block waits with
``scripts/wait-ready.sh``. This runs that exact block, with only the port changed to a free one, in a
copy without ``.run/`` or static files, and a clean environment (no test settings, database or Redis:
the embedded default). The suite's venv is reused through ``GATEWAY_VENV`` to keep it quick; run.sh
reinstalls nothing when its lock matches.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.processes import ROOT, free_port, kill_process_group

pytestmark = pytest.mark.e2e

COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".run", "staticfiles", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache"
)


def readme_try_it_block() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Try it\n+```bash\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no ```bash block under '## Try it'"
    return match.group(1)


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    copy = tmp_path / "llm-gateway"
    shutil.copytree(ROOT, copy, ignore=COPY_IGNORE, symlinks=True)
    return copy


def test_readme_try_it_block_answers_the_curl(repo_copy, tmp_path):
    assert shutil.which("curl"), "the README's block needs curl"
    port = free_port()
    block = readme_try_it_block()
    assert "scripts/run.sh &" in block and "scripts/wait-ready.sh" in block
    block = block.replace("4000", str(port))
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PORT": str(port),
        "GATEWAY_VENV": sys.prefix,
        **{name: value for name, value in os.environ.items() if name.startswith("PIP_")},
    }
    output = tmp_path / "try-it.out"
    with open(output, "wb") as out:
        # Its own session: the block leaves run.sh's server running in the background, as in a terminal.
        shell = subprocess.Popen(
            ["bash", "-c", block], cwd=repo_copy, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            # Generous: migrate, collectstatic and startup on a machine shared by the whole team.
            shell.wait(timeout=600)
            # run.sh's own "ready" line comes from a watcher that may print just after the curl.
            wait_until(lambda: "[run.sh] ready at" in output.read_text(errors="replace"), timeout=30)
        finally:
            kill_process_group(shell)
            stop_session(shell.pid)  # the background server outlives the block's shell
    text = output.read_text(errors="replace")
    assert shell.returncode == 0, text[-4000:]
    # One progress line per step, so a first run's install is not a silent minute.
    for step in ("[run.sh] migrating the database", f"[run.sh] starting the server on http://127.0.0.1:{port}"):
        assert step in text, text[-4000:]
    assert f"[run.sh] ready at http://127.0.0.1:{port}/" in text, text[-4000:]
    start = text.find('{"id"')
    assert start >= 0, f"the curl printed no completion:\n{text[-4000:]}"
    completion, _ = json.JSONDecoder().raw_decode(text, start)  # curl prints no newline after the body
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"]


def wait_until(condition, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def stop_session(session_id: int) -> None:
    """SIGTERM what is left of the block's session (run.sh's uvicorn), SIGKILL it after a grace period."""

    def alive() -> bool:
        try:
            os.killpg(session_id, 0)
        except ProcessLookupError:
            return False
        return True

    if not alive():
        return
    os.killpg(session_id, signal.SIGTERM)
    if not wait_until(lambda: not alive(), timeout=20):
        os.killpg(session_id, signal.SIGKILL)
