"""Accessibility of the admin's main pages (issue 21, part 5): axe-core through Playwright, keyboard reach.

axe-core is pinned in tests/e2e/js/package.json (installed by scripts/test.sh's ``npm ci``) and injected
into each page from that file: nothing is fetched from a CDN. Each page, for a team admin, light and dark,
must have no serious or critical violation of WCAG 2.0/2.1 A and AA rules (labels, names, contrast...).
Then the keyboard: every link, button and form control of a page's content is reachable with Tab, and a
key is created and rotated with the keyboard alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.admin_browser import WAIT_MS, admin_server, chromium, login
from tests.support.admin_cast import admin_cast

pytestmark = [pytest.mark.e2e]

AXE = Path(__file__).resolve().parent / "js" / "node_modules" / "axe-core" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]

RUN_AXE_JS = """async (tags) => {
  const describe = (node) => {
    const data = (node.any[0] || {}).data;
    return data && data.fgColor ? ` [${data.fgColor} on ${data.bgColor}: ${data.contrastRatio}]` : '';
  };
  const result = await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']});
  return result.violations
    .filter(v => v.impact === 'serious' || v.impact === 'critical')
    .map(v => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map(n => n.target.join(' ') + describe(n)).join(' | ')}`);
}"""


def main_pages(cast) -> list[str]:
    return [
        "/admin/",
        "/admin/gateway/live/",
        "/admin/gateway/deployments/",
        "/admin/gateway/deployments/group/acme-claude/",
        "/admin/keys/virtualkey/",
        "/admin/keys/virtualkey/add/",
        f"/admin/keys/virtualkey/{cast['batch'].pk}/change/",
        "/admin/teams/auditevent/",
        "/admin/spend/spendlog/",
        "/admin/teams/team/",
    ]


@pytest.fixture
def cast(transactional_db):
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run npm ci in tests/e2e/js (scripts/test.sh does)")
    return admin_cast()


def test_main_pages_have_no_serious_axe_violations_light_and_dark(cast, tmp_path, monkeypatch):
    pages = main_pages(cast)
    with admin_server(tmp_path) as base, chromium(monkeypatch) as browser:
        page = login(browser, base, "alice")
        problems = []
        for path in pages:
            page.emulate_media(color_scheme="light")
            page.goto(f"{base}{path}")
            page.add_script_tag(path=str(AXE))
            # The admin animates colour changes: measure the theme, not a frame of the switch to it.
            page.add_style_tag(content="*, *::before, *::after { transition: none !important; }")
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                problems += [f"{path} {scheme}: {text}" for text in page.evaluate(RUN_AXE_JS, TAGS)]
    assert not problems, "\n".join(problems)


UNREACHABLE_JS = """() => [...document.querySelectorAll(
    '#content-start a[href], #content-start button, #content-start input, #content-start select, '
    + '#content-start textarea, #content-start summary, #content-start [onclick]')]
  .filter(el => el.offsetParent !== null && el.type !== 'hidden' && !el.disabled)
  .filter(el => el.tabIndex < 0)
  .map(el => el.outerHTML.slice(0, 120))"""


def tab_to(page, selector: str, limit: int = 120) -> None:
    """Press Tab until ``selector`` has the focus, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(s) => document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} is not reached with Tab within {limit} presses")


def test_every_control_is_reachable_and_a_key_is_made_and_rotated_by_keyboard(cast, tmp_path, monkeypatch):
    pages = main_pages(cast)
    with admin_server(tmp_path) as base, chromium(monkeypatch) as browser:
        page = login(browser, base, "alice")
        for path in pages:
            page.goto(f"{base}{path}")
            assert page.evaluate(UNREACHABLE_JS) == [], path

        page.goto(f"{base}/admin/keys/virtualkey/add/")
        tab_to(page, "#id_alias")
        page.keyboard.type("typed-by-keyboard")
        tab_to(page, "#id_team")
        page.keyboard.press("ArrowDown")  # the first team offered: Alpha
        tab_to(page, "input[name=_save]")
        page.keyboard.press("Enter")
        page.wait_for_selector("[data-testid=issued-secret]", timeout=WAIT_MS)

        tab_to(page, ".secret-once td a")  # the new key's page
        page.keyboard.press("Enter")
        page.wait_for_selector("[data-testid=key-rotate]", timeout=WAIT_MS)
        tab_to(page, "[data-testid=key-rotate]")
        page.keyboard.press("Enter")
        secret = page.locator("[data-testid=issued-secret]").inner_text(timeout=WAIT_MS)
        assert secret.startswith("sk-")
        tab_to(page, "button.gw-copy")  # the copy button too
