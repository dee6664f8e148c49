"""Issue 21, part 1: each defect a new user met in Chromium at 1440x900, checked as that user would see it.

Debian's Chromium driven by Playwright against a real uvicorn server on this test's Postgres, populated by
tests/support/admin_cast.py (long aliases, budgets, two weeks of small costs, a deployment that failed
3 of 3 requests). Each test fails on the code before its fix.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission

from apps.keys.models import VirtualKey
from tests.support.admin_browser import WAIT_MS, admin_server, chromium, login, overflow_problems
from tests.support.admin_cast import LONG_ALIAS, admin_cast

pytestmark = [pytest.mark.e2e]

# Where each list's rightmost columns sit, and the header text a user looks for.
RIGHT_COLUMNS = {
    "/admin/keys/virtualkey/": ("status", "last used at"),
    "/admin/teams/auditevent/": ("team", "from"),
    "/admin/spend/spendlog/": ("status", "cost (usd)", "total"),
}

VISIBLE_COLUMNS_JS = """(names) => {
  const results = document.querySelector('#changelist .results');
  const right = results.getBoundingClientRect().right;
  const headers = [...document.querySelectorAll('#result_list thead th')];
  return names.map(name => {
    const th = headers.find(h => h.innerText.trim().toLowerCase() === name);
    if (!th) return `${name}: no such column`;
    const edge = th.getBoundingClientRect().right;
    return edge <= right + 1 ? null : `${name} ends at ${Math.round(edge)} px, the list at ${Math.round(right)} px`;
  }).filter(Boolean);
}"""


def contrast(first: str, second: str) -> float:
    """WCAG contrast ratio of two CSS ``rgb(...)`` colours."""

    def luminance(color: str) -> float:
        channels = [int(c) / 255 for c in re.findall(r"[\d.]+", color)[:3]]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.fixture
def cast(transactional_db):
    return admin_cast()


def test_lists_show_last_used_status_cost_and_latency_without_scrolling(cast, tmp_path, monkeypatch):
    with admin_server(tmp_path) as base, chromium(monkeypatch) as browser:
        page = login(browser, base, "alice", width=1440, height=900)
        for path, columns in RIGHT_COLUMNS.items():
            page.goto(f"{base}{path}")
            assert overflow_problems(page) == [], path
            assert page.evaluate(VISIBLE_COLUMNS_JS, list(columns)) == [], path
        # The long alias still reads in full where it is cut: its tooltip.
        page.goto(f"{base}/admin/keys/virtualkey/")
        assert LONG_ALIAS in page.inner_text("#result_list")
        models = page.locator("#result_list td.field-models_display .gw-truncate").first
        assert "claude-3-5-sonnet-20241022" in models.get_attribute("title")


def test_dashboard_bars_amounts_axis_and_dark_bars_read(cast, tmp_path, monkeypatch):
    with admin_server(tmp_path) as base, chromium(monkeypatch) as browser:
        page = login(browser, base, "alice", width=1440, height=900)
        rows = page.locator("#gw-budgets tr.gw-budget")
        assert rows.count() == 3
        for index in range(rows.count()):
            row = rows.nth(index)
            row_bg = row.evaluate("r => getComputedStyle(r).backgroundColor")
            track = row.locator(".gw-track")
            track_bg = track.evaluate("t => getComputedStyle(t).backgroundColor")
            # The empty part of the bar is seen on white and on the striped (darkened) rows alike.
            assert track_bg != row_bg and track.evaluate("t => getComputedStyle(t).boxShadow") != "none"
            amount = row.locator("td.gw-num").bounding_box()
            table = page.locator("table.gw-budgets").bounding_box()
            assert amount["x"] + amount["width"] <= table["x"] + table["width"] + 1, row.inner_text()
        # Every y-axis label of the spend chart lies inside the drawing ($0.00050 was cut at the left).
        labels = page.evaluate(
            """() => [...document.querySelectorAll('#gw-chart-days text.gw-axis')].map(t => {
                 const svg = t.ownerSVGElement.getBoundingClientRect(), box = t.getBoundingClientRect();
                 return [t.textContent, box.left - svg.left]; })"""
        )
        assert any(text == "$0.00050" for text, _ in labels), labels
        assert all(left >= 0 for _, left in labels), labels
        # Dark mode: the bars stand out from the page (WCAG's 3:1 for graphics).
        page.emulate_media(color_scheme="dark")
        bar = page.locator("#gw-chart-days rect.gw-bar").last
        fill = bar.evaluate("b => getComputedStyle(b).fill")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert contrast(fill, background) >= 3, (fill, background)


def test_live_badge_is_apart_and_key_buttons_look_like_admin_buttons(cast, tmp_path, monkeypatch):
    key_url = f"/admin/keys/virtualkey/{cast['batch'].pk}/change/"
    with admin_server(tmp_path) as base, chromium(monkeypatch) as browser:
        page = login(browser, base, "alice")
        page.goto(f"{base}/admin/gateway/live/")
        page.wait_for_selector("#gw-live-status.connected", timeout=WAIT_MS)
        badge = page.locator("#gw-live-status").bounding_box()
        sentence = page.locator("#gw-live-status + .gw-small").bounding_box()
        assert sentence["x"] >= badge["x"] + badge["width"] + 8  # "●live" no longer runs into "Requests..."

        page.goto(f"{base}{key_url}")
        history = page.locator(".object-tools a.historylink")
        reference = history.evaluate("a => [getComputedStyle(a).borderRadius, getComputedStyle(a).color]")
        for verb in ("rotate", "block", "revoke"):
            button = page.locator(f"[data-testid=key-{verb}]")
            style = button.evaluate(
                "b => [getComputedStyle(b).borderRadius, getComputedStyle(b).color, getComputedStyle(b).textTransform]"
            )
            assert style[:2] == reference and style[2] == "uppercase", (verb, style, reference)


def test_tenant_admin_sees_no_platform_internals_even_with_django_permissions(cast, tmp_path, monkeypatch):
    # A careless grant: every Django model permission. The tenant admin still sees only tenant pages.
    cast["alice"].user_permissions.set(Permission.objects.all())
    platform = ("Axes", "Access attempts", "Periodic tasks", "Groups", "Crontabs")
    with admin_server(tmp_path, forbidden_expected=True) as base, chromium(monkeypatch) as browser:
        alice = login(browser, base, "alice")
        sidebar = alice.inner_text("#content-main")
        assert not [name for name in platform if name in sidebar], sidebar
        alice.goto(f"{base}/admin/keys/virtualkey/")
        nav = alice.inner_text("#nav-sidebar")
        assert "Virtual keys" in nav and not [name for name in platform if name in nav], nav
        for path in ("/admin/axes/accessattempt/", "/admin/auth/group/", "/admin/django_celery_beat/periodictask/"):
            assert alice.goto(f"{base}{path}").status == 403, path
        root = login(browser, base, "root")
        assert "Periodic tasks" in root.inner_text("#content-main")
        assert root.goto(f"{base}/admin/axes/accessattempt/").status == 200


def test_no_dead_view_site_link_and_a_favicon(cast, tmp_path, monkeypatch):
    with admin_server(tmp_path) as base, chromium(monkeypatch) as browser:
        page = login(browser, base, "alice")
        assert page.locator("#user-tools a", has_text="View site").count() == 0
        for href in page.eval_on_selector_all("#header a", "links => links.map(a => a.href)"):
            assert page.request.get(href).status < 400, href
        icon = page.request.get(f"{base}/favicon.ico")
        assert icon.status == 200 and icon.headers["content-type"] in ("image/x-icon", "image/vnd.microsoft.icon")
        assert icon.body()[:4] == b"\x00\x00\x01\x00"  # an ICO file
        linked = page.eval_on_selector("link[rel=icon]", "l => l.href")
        assert page.request.get(linked).status == 200


def test_reloading_the_key_created_page_creates_nothing_and_aliases_are_unique(cast, tmp_path, monkeypatch):
    alpha = cast["alpha"]
    with admin_server(tmp_path) as base, chromium(monkeypatch) as browser:
        page = login(browser, base, "alice")
        page.goto(f"{base}/admin/keys/virtualkey/add/")
        page.fill("#id_alias", "reload-me")
        page.select_option("#id_team", value=str(alpha.pk))
        page.click("input[name=_save]")
        secret = page.locator("[data-testid=issued-secret]").inner_text(timeout=WAIT_MS).strip()
        assert secret.startswith("sk-") and secret not in page.url
        page.reload()  # with a POST answer, Chromium would have re-sent the form: a second key
        assert page.locator("[data-testid=issued-secret]").count() == 0
        assert page.locator("[data-testid=secret-gone]").is_visible()
        page.go_back()
        page.go_forward()
        assert secret not in page.content()

        page.goto(f"{base}/admin/keys/virtualkey/add/")
        page.fill("#id_alias", "reload-me")
        page.select_option("#id_team", value=str(alpha.pk))
        page.click("input[name=_save]")
        assert "another key in this team already has this alias" in page.inner_text(".errorlist")
    assert VirtualKey.objects.filter(team=alpha, alias="reload-me").count() == 1


def test_a_deployment_that_failed_three_of_three_is_not_ok(cast, tmp_path, monkeypatch):
    with admin_server(tmp_path) as base, chromium(monkeypatch) as browser:
        page = login(browser, base, "alice")
        page.goto(f"{base}/admin/gateway/deployments/group/acme-claude/")
        row = page.locator(f"#gw-deployments tr[data-deployment-id='{cast['broken'].pk}']")
        health = row.locator("td").nth(3).inner_text().strip()
        assert health.startswith("degraded"), health
        assert row.locator("td").nth(5).inner_text().strip() == "3"  # requests
        assert row.locator("td").nth(6).inner_text().startswith("3")  # errors
