"""The admin in a real browser: Chromium (Debian's, driven by Playwright) against a real uvicorn server.

The story of issue 6: alice, Alpha's admin, logs in and sees only her team; creates a key and sees its
secret once; uses it with plain HTTP requests on /v1/chat/completions (the built-in mock provider);
watches them arrive on the live page (a 429 highlighted by its limit) and in the dashboard's spend
chart. charlie, the outsider, sees none of it. Screenshots are taken every run; they replace
docs/screenshots/{dashboard,live}.png when those are missing or GATEWAY_UPDATE_SCREENSHOTS=1 (so a
test run leaves the working tree clean).

The server is a subprocess on a free port sharing this test's Postgres database (``transactional_db``:
rows are committed, so both processes see them), in the embedded mode otherwise (no REDIS_URL: the
in-memory channel layer and the in-process spend outbox, like ``scripts/run.sh``).
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest

from apps.spend.events import SpendEvent
from apps.spend.ingest import spend_ingest_events
from tests.factories import DeploymentFactory, MembershipFactory, SpendEventFactory, UserFactory, VirtualKeyFactory
from tests.support.database import wait_for_other_sessions_to_end
from tests.support.processes import ServerProcess, free_port, uvicorn_command

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
PASSWORD = "correct horse battery"
WAIT_MS = 20_000


def _database_url_for(db_name: str) -> str:
    parts = urlparse(os.environ.get("DATABASE_URL", ""))
    if parts.scheme not in ("postgres", "postgresql"):
        pytest.skip("the browser tests share a Postgres database with the server (run scripts/test.sh)")
    return urlunparse(parts._replace(path=f"/{db_name}"))


@pytest.fixture(params=["embedded", "redis"])
def server(request, transactional_db, tmp_path):
    """uvicorn serving the whole gateway (admin, websockets, /v1) on a free port, on this test's database.

    ``embedded``: one worker, no Redis (in-memory channel layer, spend written by the in-process outbox).
    ``redis``: two workers on the Redis channel layer (the browser's socket and the request usually land
    on different processes) and a real Celery worker ingesting the spend stream, as in production.
    """
    from django.conf import settings
    from django.db import connection

    mode = request.param
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.e2e.browser_settings",
        "DATABASE_URL": _database_url_for(connection.settings_dict["NAME"]),
        "REDIS_URL": "",
        "GATEWAY_RUN_DIR": str(tmp_path / "run"),
        "GATEWAY_SECRET_KEY": settings.GATEWAY_SECRET_KEY,  # keys made by the factories here work there
        "PYTHONPATH": str(ROOT),
    }
    workers, celery = 1, None
    if mode == "redis":
        if not settings.REDIS_URL:
            pytest.skip("needs the Redis started by scripts/test.sh")
        from apps.spend.schedules import schedules_setup
        from tests.integration.spend_processes import CeleryWorker, empty_spend_stream

        env["REDIS_URL"], workers = settings.REDIS_URL, 2
        schedules_setup()
        empty_spend_stream()
        celery = CeleryWorker(tmp_path)
        celery.start()
    base = f"http://127.0.0.1:{port}"
    command = uvicorn_command(port, workers, access_log=True)
    log_path = tmp_path / "server.log"
    try:
        with ServerProcess(command, env=env, ready_url=f"{base}/health/live", log_path=log_path, start_timeout=60):
            yield Server(base, mode)
    finally:
        if celery is not None:
            celery.stop()
    wait_for_other_sessions_to_end()
    server_log = (tmp_path / "server.log").read_text(errors="replace")
    assert "Traceback" not in server_log, server_log[-3000:]


class Server(str):
    """The base URL, which also knows how the server runs."""

    def __new__(cls, base: str, mode: str):
        obj = super().__new__(cls, base)
        obj.mode = mode
        return obj


@pytest.fixture
def browser(monkeypatch):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    # Playwright's sync API runs an event loop in this thread: request this fixture after the ones that use
    # the ORM (a connection opened inside that loop's context would outlive the test database's teardown).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def cast(transactional_db):
    """Acme/Alpha with alice (admin) and a budget; Globex/Omega with charlie; a shared mock deployment."""
    from tests.factories import OrganizationFactory, TeamFactory

    acme = OrganizationFactory(name="Acme")
    budget = {"soft_budget": Decimal("0.0004"), "max_budget": Decimal("0.01"), "budget_duration": "1mo"}
    alpha = TeamFactory(organization=acme, name="Alpha", **budget)
    globex = OrganizationFactory(name="Globex")
    omega = TeamFactory(organization=globex, name="Omega")
    alice = UserFactory(username="alice")
    MembershipFactory(user=alice, team=alpha, organization=acme, role="admin")
    charlie = UserFactory(username="charlie")
    MembershipFactory(user=charlie, team=omega, organization=globex, role="admin")
    DeploymentFactory(model_name="gpt-4o-mini", provider="mock", organization=None)
    omega_key = VirtualKeyFactory(team=omega, user=charlie, alias="omega-secret-project")
    batch_key = VirtualKeyFactory(team=alpha, user=alice, alias="alpha-batch-job")
    # Some history, so the charts have a shape: Alpha's last days, and Omega's (which alice must never see).
    now = time.time()
    history = []
    for days_ago, cost in ((6, "0.0011"), (4, "0.0023"), (3, "0.0017"), (1, "0.0031")):
        history.append(_event(alpha, alias=batch_key.alias, cost=cost, at=now - days_ago * 86400, key_id=batch_key.pk))
    history.append(_event(omega, alias=omega_key.alias, cost="9.99", at=now - 3600, key_id=omega_key.pk))
    spend_ingest_events(history)
    hostile = VirtualKeyFactory(team=alpha, user=alice, alias='<img src=x onerror="window.__xss=1">hostile')
    return {"alpha": alpha, "omega": omega, "alice": alice, "charlie": charlie, "hostile": hostile}


def _event(team, *, alias: str, cost: str, at: float, key_id=None) -> SpendEvent:
    return SpendEventFactory(
        created_at=at,
        llm_provider="mock",
        organization_id=team.organization_id,
        team_id=team.pk,
        key_id=key_id,
        key_alias=alias,
        prompt_tokens=120,
        completion_tokens=40,
        cost=cost,
        latency_ms=35.0,
    )


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def _login(context, base: str, username: str):
    page = context.new_page()
    page.goto(f"{base}/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("h1:has-text('Gateway dashboard')", timeout=WAIT_MS)
    return page


def _chat(base: str, secret: str, text: str) -> tuple[int, dict]:
    """What ``curl -H 'Authorization: Bearer sk-...' -d '{...}' $BASE/v1/chat/completions`` does."""
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "max_tokens": 16})
    request = urllib.request.Request(
        f"{base}/v1/chat/completions",
        data=body.encode(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _screenshot(page, name: str, tmp_path: Path, **options) -> None:
    shot = tmp_path / name
    page.screenshot(path=str(shot), **options)
    target = SCREENSHOTS / name
    if os.environ.get("GATEWAY_UPDATE_SCREENSHOTS") == "1" or not target.exists():
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        target.write_bytes(shot.read_bytes())


def _today_bar(page) -> float:
    return float(page.locator(".gw-chart.days rect.gw-bar").last.get_attribute("data-value"))


def test_team_admin_creates_a_key_uses_it_and_watches_it_live(server, cast, browser, tmp_path):
    alice_ctx = browser.new_context(viewport={"width": 1360, "height": 1000})
    dashboard = _login(alice_ctx, server, "alice")

    # She sees her team and none of Globex's.
    html = dashboard.content()
    assert "Acme / Alpha" in html
    assert "omega-secret-project" not in html and "Globex" not in html and "$9.99" not in html
    spend_before = _today_bar(dashboard)
    teams = alice_ctx.new_page()
    teams.goto(f"{server}/admin/teams/team/")
    assert "Alpha" in teams.inner_text("#result_list") and "Omega" not in teams.content()
    teams.close()

    # She creates a key; the secret is shown once.
    add = alice_ctx.new_page()
    add.goto(f"{server}/admin/keys/virtualkey/add/")
    add.fill("#id_alias", "e2e-checkout")
    add.select_option("#id_team", label="Acme / Alpha")
    add.fill("#id_rpm_limit", "2")
    add.click("input[name=_save]")
    secret_cell = add.locator("[data-testid=issued-secret]")
    secret_cell.wait_for(timeout=WAIT_MS)
    secret = secret_cell.inner_text().strip()
    assert re.fullmatch(r"sk-[A-Za-z0-9_\-]{20,}", secret), secret
    assert add.locator("button.gw-copy").is_visible()
    add.click("a:has-text('e2e-checkout')")
    add.wait_for_selector("#content-main", timeout=WAIT_MS)
    assert secret not in add.content()
    add.goto(f"{server}/admin/keys/virtualkey/")
    assert "e2e-checkout" in add.content() and secret not in add.content()

    # The creation is in her tenant's audit trail: who, what, from where.
    audit = alice_ctx.new_page()
    audit.goto(f"{server}/admin/teams/auditevent/")
    row = audit.locator("#result_list tbody tr", has_text="e2e-checkout").first
    assert all(part in row.inner_text() for part in ("alice", "key.create", "admin", "127.0.0.1"))
    audit.close()

    # The live page is connected before the traffic starts.
    live = alice_ctx.new_page()
    live.goto(f"{server}/admin/gateway/live/")
    live.wait_for_selector("#gw-live-status.connected", timeout=WAIT_MS)

    # The outsider watches too: nothing of Alpha's may reach him.
    charlie_ctx = browser.new_context(viewport={"width": 1360, "height": 1000})
    charlie_dashboard = _login(charlie_ctx, server, "charlie")
    charlie_live = charlie_ctx.new_page()
    charlie_live.goto(f"{server}/admin/gateway/live/")
    charlie_live.wait_for_selector("#gw-live-status.connected", timeout=WAIT_MS)

    # Plain HTTP with the new key: two answers, then the key's 2 requests/minute refuse the third.
    statuses = [_chat(server, secret, f"hello {n}")[0] for n in range(3)]
    assert statuses == [200, 200, 429], statuses
    status, refusal = _chat(server, secret, "once more")
    assert status == 429 and refusal["error"]["limit_type"] == "requests"

    rows = live.locator("#gw-live-table tbody tr", has_text="e2e-checkout")
    expect(rows).to_have_count(4, timeout=WAIT_MS)  # rows from both workers arrive within a flush or two
    limited = live.locator("#gw-live-table tbody tr.gw-status-429.gw-limit-requests")
    assert limited.count() == 2 and "requests" in limited.first.inner_text()
    assert secret not in live.content()
    if server.mode == "embedded":
        live.wait_for_timeout(1500)  # let the arrival highlight fade, so the screenshot shows the 429 colours
        _screenshot(live, "live.png", tmp_path, full_page=True)

    # The spend arrives in the dashboard once the outbox has written it to the ledger.
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        dashboard.reload()
        arrived = dashboard.inner_text("#gw-requests-today .gw-big").strip() == "4"
        if (arrived and "e2e-checkout" in dashboard.inner_text("#gw-top-keys")) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert "e2e-checkout" in dashboard.inner_text("#gw-top-keys")
    assert _today_bar(dashboard) > spend_before
    assert dashboard.inner_text("#gw-requests-today .gw-big").strip() == "4"
    assert dashboard.locator("#gw-budgets tr.gw-budget-soft", has_text="Alpha").count() == 1
    assert "requests" in dashboard.inner_text(".gw-limited")
    if server.mode == "embedded":
        _screenshot(dashboard, "dashboard.png", tmp_path, full_page=True)

    # The model group's page: the shared mock deployment is healthy and served the requests; only a
    # superuser may test a shared deployment, so alice gets no button.
    group = alice_ctx.new_page()
    group.goto(f"{server}/admin/gateway/deployments/")
    group.click("#gw-groups a:has-text('gpt-4o-mini')")
    deployment_row = group.locator("#gw-deployments tbody tr").first
    deployment_row.wait_for(timeout=WAIT_MS)
    assert "ok" in deployment_row.locator("td").nth(3).inner_text()
    assert "none yet" in deployment_row.locator("td").nth(4).inner_text()  # no scheduled probe has run
    assert int(deployment_row.locator("td").nth(5).inner_text()) >= 2
    assert group.locator("input[value='Test connection']").count() == 0
    if server.mode == "embedded":
        _screenshot(group, "deployments.png", tmp_path, full_page=True)
    group.close()

    # charlie: no Alpha rows arrived, Alpha's key page is not his, his dashboard is Omega's.
    time.sleep(0.5)  # one more flush interval after alice's page had everything
    assert "e2e-checkout" not in charlie_live.content()
    charlie_dashboard.reload()
    charlie_html = charlie_dashboard.content()
    assert "e2e-checkout" not in charlie_html and "Acme / Alpha" not in charlie_html
    assert "omega-secret-project" in charlie_html
    key_id = add.locator("#result_list a", has_text="e2e-checkout").first.get_attribute("href")
    stolen = charlie_ctx.new_page()
    stolen.goto(f"{server}{key_id}")
    assert "e2e-checkout" not in stolen.content()
    assert "doesn’t exist" in stolen.content() or "doesn't exist" in stolen.content() or "403" in stolen.content()

    # Alice filters to failures, then pauses: rows arriving meanwhile are held, not lost.
    live.check("#gw-live-errors-only")
    assert live.locator("#gw-live-table tbody tr:visible", has_text="e2e-checkout").count() == 2
    live.uncheck("#gw-live-errors-only")
    live.click("#gw-live-pause")
    assert _chat(server, secret, "while paused")[0] == 429
    live.wait_for_selector("#gw-live-held:has-text('1 held')", timeout=WAIT_MS)
    assert rows.count() == 4
    live.click("#gw-live-pause")
    expect(rows).to_have_count(5, timeout=WAIT_MS)

    # A tenant-typed alias arrives as text, never as markup.
    assert _chat(server, cast["hostile"].secret, "hi")[0] == 200
    hostile_rows = live.locator("#gw-live-table tbody tr", has_text="hostile")
    expect(hostile_rows).to_have_count(1, timeout=WAIT_MS)
    assert live.locator("#gw-live-table img").count() == 0
    assert live.evaluate("window.__xss") is None
    assert '<img src=x onerror="window.__xss=1">hostile' in hostile_rows.first.inner_text()

    # Without a session the pages are behind the login.
    anonymous = browser.new_context().new_page()
    anonymous.goto(f"{server}/admin/gateway/live/")
    assert "/admin/login/" in anonymous.url
