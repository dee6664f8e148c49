"""The API documentation pages render offline: Chromium with every request off this server refused.

``/api/docs/`` (drf-spectacular's Swagger UI for the provisioning API) and ``/v1/key/docs`` (django-ninja's
for the key holder's self-service API) must load their scripts and styles from the gateway's own pinned
static files, never a CDN: an operator's network may have no internet, and ``@latest`` from a CDN is code
nobody reviewed running next to an admin session. The page is opened under a public host name
(``gw.example.com``, resolved to loopback) so that Swagger UI's online validator badge, which it skips
for localhost, would show up as a blocked request too.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.support.processes import ServerProcess, child_env, free_port, uvicorn_command

pytestmark = [pytest.mark.e2e]

CHROMIUM = "/usr/bin/chromium"
HOST = "gw.example.com"
WAIT_MS = 30_000


@pytest.fixture
def server(db, tmp_path):
    port = free_port()
    env = child_env(
        DJANGO_SETTINGS_MODULE="tests.e2e.browser_settings",  # static files straight from the apps
        DJANGO_ALLOWED_HOSTS=HOST,
        REDIS_URL="",
        GATEWAY_RUN_DIR=str(tmp_path / "run"),
    )
    with ServerProcess(
        uvicorn_command(port),
        env=env,
        ready_url=f"http://127.0.0.1:{port}/health/live",
        log_path=tmp_path / "server.log",
        start_timeout=90,
    ) as process:
        yield port
    assert "Traceback" not in process.output(), process.output()


@pytest.fixture
def offline_page(monkeypatch, server):
    """A page in a browser that can reach only the gateway: anything else is refused and recorded."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs a loop here
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        # No DNS at all except the gateway's public name, which is this machine.
        f"--host-resolver-rules=MAP {HOST} 127.0.0.1, MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        context = browser.new_context()
        page = context.new_page()
        page.elsewhere, page.failed = [], []

        def only_the_gateway(route):
            if urlparse(route.request.url).hostname in (HOST, "127.0.0.1"):
                route.continue_()
            else:
                page.elsewhere.append(route.request.url)
                route.abort("internetdisconnected")

        context.route("**/*", only_the_gateway)
        page.on("response", lambda r: r.status >= 400 and page.failed.append(f"{r.status} {r.url}"))
        page.base = f"http://{HOST}:{server}"
        yield page
        browser.close()


def test_provisioning_api_docs_render_from_pinned_static_files(offline_page):
    page = offline_page
    page.goto(f"{page.base}/api/docs/")
    page.wait_for_selector(".opblock-summary-path", timeout=WAIT_MS)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/v1/keys/" in [p.replace("\u200b", "") for p in paths], paths
    assert len(paths) > 20, paths
    page.wait_for_load_state("networkidle", timeout=WAIT_MS)
    assert page.elsewhere == [], "requests off the gateway"
    assert page.failed == []
    assert page.locator("script[src*='cdn'], link[href*='cdn']").count() == 0


def test_key_self_service_docs_render_from_pinned_static_files(offline_page):
    page = offline_page
    page.goto(f"{page.base}/v1/key/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=WAIT_MS)
    paths = [p.replace("\u200b", "") for p in page.locator(".opblock-summary-path").all_inner_texts()]
    assert "/v1/key/info" in paths, paths
    page.wait_for_load_state("networkidle", timeout=WAIT_MS)
    assert page.elsewhere == [], "requests off the gateway"
    assert page.failed == []
