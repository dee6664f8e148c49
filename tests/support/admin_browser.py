"""The admin in Debian's Chromium (Playwright) against a real uvicorn server sharing the test's Postgres.

Shared by the admin's browser suites (tests/e2e/test_admin_*.py): start the server (embedded mode: one
worker, in-process spend outbox, in-memory channel layer), launch one browser, log people in, and measure
what a user would see (horizontal overflow of the content area and of each changelist's table).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest

from tests.support.database import wait_for_other_sessions_to_end
from tests.support.processes import ServerProcess, free_port, uvicorn_command

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PASSWORD = "correct horse battery"  # tests.factories.UserFactory's
WAIT_MS = 20_000


@contextmanager
def admin_server(tmp_path: Path, *, forbidden_expected: bool = False, **extra_env: str) -> Iterator[str]:
    """uvicorn serving the whole gateway on a free port, on this test's database; yields its base URL.

    The server's log must hold no traceback, except, with ``forbidden_expected``, Django's log of the
    PermissionDenied (403) answers the test provokes."""
    from django.conf import settings
    from django.db import connection

    parts = urlparse(os.environ.get("DATABASE_URL", ""))
    if parts.scheme not in ("postgres", "postgresql"):
        pytest.skip("the browser tests share a Postgres database with the server (run scripts/test.sh)")
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.e2e.browser_settings",
        "DATABASE_URL": urlunparse(parts._replace(path=f"/{connection.settings_dict['NAME']}")),
        "REDIS_URL": "",
        "GATEWAY_RUN_DIR": str(tmp_path / "run"),
        "GATEWAY_SECRET_KEY": settings.GATEWAY_SECRET_KEY,  # keys made by the factories here work there
        "PROXY_SHED_LOOP_LAG_MS": "0",
        "PYTHONPATH": str(ROOT),
        **extra_env,
    }
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with ServerProcess(uvicorn_command(port, 1), env=env, ready_url=f"{base}/health/live", log_path=log_path):
        yield base
    wait_for_other_sessions_to_end()
    blocks = log_path.read_text(errors="replace").split("Traceback")[1:]
    unexpected = [b for b in blocks if not (forbidden_expected and "exceptions.PermissionDenied" in b)]
    assert not unexpected, unexpected[0][-3000:]


@contextmanager
def chromium(monkeypatch) -> Iterator[object]:
    """One headless Chromium. Use it after the ORM work of the test: Playwright's sync API runs an event
    loop in this thread, and a connection opened inside it would outlive the test database's teardown."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def login(browser, base: str, username: str, *, width: int = 1440, height: int = 900, color_scheme: str = "light"):
    """A new browser context logged in as ``username``; returns its page, on the dashboard."""
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=color_scheme)
    page = context.new_page()
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("h1:has-text('Gateway dashboard')", timeout=WAIT_MS)
    return page


# What overflows, measured in the page: the content area (<main id="content-start">, beside the navigation
# side bar, holding #content and its related column), and every table in it and its scrolling wrapper (a
# changelist's .results) or panel (.module, which clips what overflows it; a changelist's own box is measured
# by its .results): wider than its box, or reaching
# past the content area's right edge.
OVERFLOW_JS = """() => {
  const problems = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth + 1) {
    problems.push(`page ${doc.scrollWidth} px in a ${window.innerWidth} px window`);
  }
  const content = document.querySelector('#content-start') || document.querySelector('#content');
  if (content && content.scrollWidth > content.clientWidth + 1) {
    problems.push(`content area ${content.scrollWidth} px in ${content.clientWidth} px`);
  }
  for (const box of content ? content.querySelectorAll('.results, table, .module:not(#changelist)') : []) {
    if (box.scrollWidth > box.clientWidth + 1) {
      const name = box.id || box.className || box.tagName;
      problems.push(`${name} ${box.scrollWidth} px in ${box.clientWidth} px`);
    }
    if (content && box.getBoundingClientRect().right > content.getBoundingClientRect().right + 1) {
      const name = box.id || box.className || box.tagName;
      problems.push(`${name} ends at ${Math.round(box.getBoundingClientRect().right)} px, past the content area's `
        + `${Math.round(content.getBoundingClientRect().right)} px`);
    }
  }
  return problems;
}"""


def overflow_problems(page) -> list[str]:
    return page.evaluate(OVERFLOW_JS)


def screenshot(page, name: str, tmp_path: Path, *, publish: bool = True, **options) -> None:
    """Always into tmp_path; into docs/screenshots/ only with GATEWAY_UPDATE_SCREENSHOTS=1 (a test run never
    rewrites the docs otherwise)."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), **options)
    if publish and os.environ.get("GATEWAY_UPDATE_SCREENSHOTS") == "1":
        target = SCREENSHOTS / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(shot.read_bytes())
