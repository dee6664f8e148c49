"""The request explorer in a real browser (Debian's Chromium driven by Playwright) on a real uvicorn server.

alice, Alpha's admin, sends requests with plain HTTP through /v1 (one fails over between two mock
deployments, one is refused by her key's limit), then in the admin at 1440 px: filters the list to the
refusal, opens a request's detail page and reads which deployments it tried, narrows by time and
downloads the CSV. Omega's request (charlie's) never shows. No console errors, no horizontal overflow.
A screenshot replaces docs/screenshots/requests.png when missing or with GATEWAY_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import csv
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest

from apps.spend.ingest import spend_ingest_events
from apps.spend.models import SpendLog
from tests.factories import (
    DeploymentFactory,
    MembershipFactory,
    OrganizationFactory,
    SpendEventFactory,
    TeamFactory,
    UserFactory,
    VirtualKeyFactory,
)
from tests.support.database import wait_for_other_sessions_to_end
from tests.support.processes import ServerProcess, free_port, uvicorn_command

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "screenshots" / "requests.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PASSWORD = "correct horse battery"
WAIT_MS = 20_000


@pytest.fixture
def cast(transactional_db):
    acme = OrganizationFactory(name="Acme")
    alpha = TeamFactory(organization=acme, name="Alpha")
    globex = OrganizationFactory(name="Globex")
    omega = TeamFactory(organization=globex, name="Omega")
    alice = UserFactory(username="alice")
    MembershipFactory(user=alice, team=alpha, organization=acme, role="admin")
    charlie = UserFactory(username="charlie")
    MembershipFactory(user=charlie, team=omega, organization=globex, role="admin")
    # Two deployments of one model: the preferred one answers 500, so the first request fails over.
    broken = DeploymentFactory(organization=acme, model_name="gpt-4o-mini", extra={"mock_error": 500}, priority=0)
    healthy = DeploymentFactory(organization=acme, model_name="gpt-4o-mini", model="mock-steady", priority=1)
    key = VirtualKeyFactory(team=alpha, user=alice, alias="checkout-app", rpm_limit=2)
    omega_key = VirtualKeyFactory(team=omega, user=charlie, alias="omega-secret-project")
    spend_ingest_events([SpendEventFactory(key=omega_key, request_id="req_omega_only", cost="9.99")])
    return {"key": key, "broken": broken, "healthy": healthy}


@pytest.fixture
def server(cast, tmp_path):
    """uvicorn (one worker, embedded: the in-process outbox writes the ledger) on this test's database."""
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
        "GATEWAY_SECRET_KEY": settings.GATEWAY_SECRET_KEY,  # the factories' keys work there
        "PROXY_SHED_LOOP_LAG_MS": "0",
        "PYTHONPATH": str(ROOT),
    }
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with ServerProcess(uvicorn_command(port, 1), env=env, ready_url=f"{base}/health/live", log_path=log_path):
        yield base
    wait_for_other_sessions_to_end()
    assert "Traceback" not in log_path.read_text(errors="replace")


@pytest.fixture
def traffic(server, cast) -> list[tuple[int, str]]:
    """Three requests through /v1, in the ledger before the browser starts (its event loop must not own
    the ORM connection the waiting opens: that one would outlive the test database's teardown)."""
    results = [chat(server, cast["key"].secret) for _ in range(3)]
    assert [status for status, _id in results] == [200, 200, 429], results
    wait_for_rows([request_id for _status, request_id in results])
    return results


@pytest.fixture
def browser(monkeypatch):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's sync API runs a loop in this thread
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def chat(base: str, secret: str) -> tuple[int, str]:
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
    request = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=body.encode(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["x-request-id"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["x-request-id"]


def wait_for_rows(request_ids: list[str]) -> None:
    deadline = time.monotonic() + WAIT_MS / 1000
    while SpendLog.objects.filter(request_id__in=request_ids).count() < len(request_ids):
        assert time.monotonic() < deadline, "the ledger never got the requests"
        time.sleep(0.2)


def no_horizontal_overflow(page) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide in a {widths[1]} px window"


def test_alice_filters_opens_a_request_and_downloads_the_csv(server, traffic, browser, tmp_path):
    results = traffic
    (_, failed_over), _second, (_, refused) = results

    context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(f"{message.text} {message.location}"))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", lambda response: response.status >= 400 and errors.append(f"{response.status} {response.url}"))
    page.goto(f"{server}/admin/login/?next=/admin/spend/spendlog/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list", timeout=WAIT_MS)
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 3
    assert "req_omega_only" not in page.content() and "omega-secret-project" not in page.content()
    no_horizontal_overflow(page)

    # Only the refusal, by its limit type.
    page.click("#changelist-filter a:text-is('requests')")
    page.wait_for_url("**limit_type=requests**", timeout=WAIT_MS)
    assert rows.count() == 1 and refused in rows.first.inner_text() and "429 requests" in rows.first.inner_text()

    # Back to all, then the request that failed over: its detail page tells the whole story.
    page.click("#changelist-filter details[data-filter-title='limit type'] a:has-text('All')")
    page.fill("#searchbar", failed_over)
    page.press("#searchbar", "Enter")
    page.wait_for_url(f"**q={failed_over}**", timeout=WAIT_MS)
    assert rows.count() == 1
    rows.first.locator("th a").click()
    page.wait_for_selector("#gw-attempts", timeout=WAIT_MS)
    detail = page.inner_text("#content-main")
    assert failed_over in detail
    for label in ("Gateway overhead", "Upstream time to first byte", "Total time", "Retries"):
        assert label in detail, label
    attempts = page.locator("#gw-attempts tr")
    assert attempts.count() == 3  # the header and two attempts, the broken deployment first
    assert "mock-gpt" in attempts.nth(1).inner_text() and "502 upstream_error" in attempts.nth(1).inner_text()
    assert "mock-steady" in attempts.nth(2).inner_text() and "ok" in attempts.nth(2).inner_text()
    no_horizontal_overflow(page)

    # The last day, typed in the time form; the CSV holds the rows the list shows.
    page.goto(f"{server}/admin/spend/spendlog/")
    since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 86400))
    page.fill("#gw-time-range input[name=since]", since)
    page.click("#gw-time-range input[type=submit]")
    page.wait_for_url("**since=**", timeout=WAIT_MS)
    assert rows.count() == 3
    if os.environ.get("GATEWAY_UPDATE_SCREENSHOTS") == "1" or not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    with page.expect_download(timeout=WAIT_MS) as download_info:
        page.click("#gw-export")
    path = tmp_path / "requests.csv"
    download_info.value.save_as(path)
    with path.open(newline="") as handle:
        exported = list(csv.DictReader(handle))
    assert {row["request_id"] for row in exported} == {request_id for _status, request_id in results}
    assert {row["key_alias"] for row in exported} == {"checkout-app"}
    assert errors == []
