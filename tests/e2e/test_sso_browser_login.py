"""Admin single sign-on in a real browser against a real OpenID provider (issue 18).

The provider is oidc-provider on Node (tests/e2e/js/oidc_provider.mjs: discovery, JWKS, signed ID
tokens, PKCE required, RP-initiated logout), its login and consent pages driven by Chromium like a
person would. The gateway is uvicorn on this test's Postgres, with password login switched off except
for the break-glass superuser "root".

The cast: Acme (teams Alpha and Beta) and Globex (team Omega). alice is in the provider's group
``acme-alpha-admins`` (rule: admin of Alpha); dave is in no mapped group; eve's address is outside the
allowed domain.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from apps.sso.models import GroupMapping, SsoGrant, SsoIdentity
from apps.teams.models import AuditEvent, Membership, User
from tests.factories import OrganizationFactory, TeamFactory, UserFactory
from tests.support.database import wait_for_other_sessions_to_end
from tests.support.oidc import OidcProvider
from tests.support.processes import ServerProcess, child_env, free_port, uvicorn_command

pytestmark = [pytest.mark.e2e]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
WAIT_MS = 20_000
CLIENT_SECRET = "gateway-client-secret-0123456789"
ROOT_PASSWORD = "break glass in case of fire"
ACCOUNTS = {
    "alice": {
        "email": "alice@acme.test",
        "email_verified": True,
        "given_name": "Alice",
        "groups": ["acme-alpha-admins"],
    },
    "dave": {"email": "dave@acme.test", "email_verified": True, "groups": ["unmapped"]},
    "eve": {"email": "eve@evil.test", "email_verified": True, "groups": ["acme-alpha-admins"]},
}


@pytest.fixture(scope="module")
def gateway_port():
    return free_port()


@pytest.fixture(scope="module")
def provider(gateway_port):
    base = f"http://127.0.0.1:{gateway_port}"
    client = {
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "redirect_uris": [f"{base}/admin/sso/callback/"],
        "post_logout_redirect_uris": [f"{base}/admin/login/"],
    }
    clients = [
        {"client_id": "gateway", "client_secret": CLIENT_SECRET, **client},
        # Another application at the same provider, whose codes and tokens are not the gateway's.
        {"client_id": "other-app", "client_secret": "other-app-secret-0123456789", **client},
    ]
    with OidcProvider(clients=clients, accounts=ACCOUNTS) as server:
        yield server


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, gateway_port, provider, tmp_path_factory):
    env = child_env(
        DJANGO_SETTINGS_MODULE="tests.e2e.browser_settings",
        REDIS_URL="",
        OIDC_ISSUER=provider.issuer,
        OIDC_CLIENT_ID="gateway",
        OIDC_CLIENT_SECRET=CLIENT_SECRET,
        OIDC_SCOPES="openid email profile groups",
        OIDC_PROVIDER_NAME="Test IdP",
        OIDC_ALLOWED_EMAIL_DOMAINS="acme.test",
        ADMIN_PASSWORD_LOGIN="off",
        ADMIN_BREAK_GLASS_USERS="root",
        GATEWAY_RUN_DIR=str(tmp_path_factory.mktemp("run")),
    )
    base = f"http://127.0.0.1:{gateway_port}"
    log_path = tmp_path_factory.mktemp("log") / "server.log"
    with (
        django_db_blocker.unblock(),
        ServerProcess(
            uvicorn_command(gateway_port, 1, access_log=True),
            env=env,
            ready_url=f"{base}/health/live",
            log_path=log_path,
        ) as process,
    ):
        process.base = base
        yield process
    with django_db_blocker.unblock():
        wait_for_other_sessions_to_end()
    assert "Traceback" not in Path(log_path).read_text(errors="replace")


@pytest.fixture
def cast(transactional_db, provider):
    provider.accounts_set(ACCOUNTS)
    acme = OrganizationFactory(name="Acme")
    alpha = TeamFactory(organization=acme, name="Alpha")
    beta = TeamFactory(organization=acme, name="Beta")
    globex = OrganizationFactory(name="Globex")
    omega = TeamFactory(organization=globex, name="Omega")
    GroupMapping.objects.create(value="acme-alpha-admins", organization=acme, team=alpha, role="admin")
    GroupMapping.objects.create(value="acme-beta", organization=acme, team=beta, role="member")
    GroupMapping.objects.create(value="globex", organization=globex, team=omega, role="member")
    root = UserFactory(username="root", is_superuser=True, is_staff=True)
    root.set_password(ROOT_PASSWORD)
    root.save()
    return {"acme": acme, "alpha": alpha, "beta": beta, "omega": omega}


@pytest.fixture
def browser(monkeypatch):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _context(browser):
    context = browser.new_context()
    # The provider's sample pages @import a web font: no internet here, so answer that at once.
    context.route("**/fonts.googleapis.com/**", lambda route: route.abort())
    return context


def _sso(page, server, login: str):
    """From the admin's login page through the provider's login (and consent) pages, back to the gateway."""
    page.goto(f"{server.base}/admin/login/?next=/admin/")
    page.click("text=Sign in with Test IdP")
    _provider_pages(page, server, login)


def _provider_pages(page, server, login: str) -> None:
    page.wait_for_selector("input[name=login]", timeout=WAIT_MS)
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password: the sample provider checks none")
    page.click("button:has-text('Sign-in')")
    page.wait_for_url(lambda url: url.startswith(server.base) or "/interaction/" in url, timeout=WAIT_MS)
    if not page.url.startswith(server.base):
        page.click("button:has-text('Continue')")  # the consent page: each new provider session asks once
    page.wait_for_url(f"{server.base}/admin/**", timeout=WAIT_MS)
    page.wait_for_load_state()


def test_alice_signs_in_lands_in_alpha_as_admin_and_sees_only_her_tenant(server, cast, browser):
    context = _context(browser)
    page = context.new_page()
    _sso(page, server, "alice")
    page.wait_for_selector("h1:has-text('Gateway dashboard')", timeout=WAIT_MS)

    alice = User.objects.get(username="alice@acme.test")
    membership = Membership.objects.get(user=alice)
    assert (membership.team, membership.role) == (cast["alpha"], "admin")
    assert SsoGrant.objects.filter(membership=membership).exists()
    assert SsoIdentity.objects.get(user=alice).groups == ["acme-alpha-admins"]
    assert not alice.has_usable_password() and not alice.is_superuser

    page.goto(f"{server.base}/admin/teams/team/")
    rows = page.locator("#result_list tbody tr").all_inner_texts()
    assert any("Alpha" in row for row in rows), rows
    assert not any("Omega" in row or "Beta" in row for row in rows), rows

    audit = AuditEvent.objects.filter(source="sso").values_list("action", flat=True)
    assert {"user.create", "sso.identity_link", "membership.create"} <= set(audit)
    context.close()


def test_removed_from_the_group_loses_the_membership_at_the_next_login(server, provider, cast, browser):
    context = _context(browser)
    page = context.new_page()
    _sso(page, server, "alice")
    alice = User.objects.get(username="alice@acme.test")
    assert Membership.objects.filter(user=alice, team=cast["alpha"]).exists()

    # Logging out here ends the provider's session too (RP-initiated logout, confirmed on its page).
    page.click("#logout-form button")
    page.wait_for_selector("button:has-text('Yes, sign me out')", timeout=WAIT_MS)
    page.click("button:has-text('Yes, sign me out')")
    page.wait_for_url(f"{server.base}/admin/login/**", timeout=WAIT_MS)

    # Moved from Alpha's admins to Beta: the next sign-in moves her (the provider asks for a login again).
    provider.accounts_set({**ACCOUNTS, "alice": {**ACCOUNTS["alice"], "groups": ["acme-beta"]}})
    _sso(page, server, "alice")
    places = set(Membership.objects.filter(user=alice).values_list("team__name", "role"))
    assert places == {("Beta", "member")}

    # Out of every mapped group: the sign-in is refused and nothing of hers is left.
    page.context.clear_cookies()
    provider.accounts_set({**ACCOUNTS, "alice": {**ACCOUNTS["alice"], "groups": []}})
    _sso(page, server, "alice")
    page.wait_for_selector("#sso-refused", timeout=WAIT_MS)
    assert "None of your groups gives access" in page.inner_text("#sso-refused")
    assert not Membership.objects.filter(user=alice).exists()
    removed = AuditEvent.objects.filter(source="sso", action="membership.delete").count()
    assert removed == 2  # Alpha (moved) and Beta (removed)
    page.goto(f"{server.base}/admin/")
    page.wait_for_selector("#id_username", state="attached", timeout=WAIT_MS)  # back on the login page
    context.close()


def _refusal(page) -> str:
    page.wait_for_selector("#sso-refused", timeout=WAIT_MS)
    return page.inner_text("#sso-refused")


def _rewrite_query(url: str, **changes: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query.update(changes)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _sso_tampered(context, server, login: str, **changes: str):
    """Start a sign-in, change the authorization request's parameters on its way to the provider, go on."""
    started = context.request.get(f"{server.base}/admin/sso/login/?next=/admin/", max_redirects=0)
    assert started.status == 302
    page = context.new_page()
    page.goto(_rewrite_query(started.headers["location"], **changes))
    _provider_pages(page, server, login)
    return page


def test_a_state_the_gateway_never_issued_is_refused(server, cast, browser):
    context = _context(browser)
    page = _sso_tampered(context, server, "alice", state="forged-state")
    assert "did not check out" in _refusal(page)
    assert not User.objects.filter(username="alice@acme.test").exists()
    assert not _signed_in(page, server)
    context.close()


def test_a_sign_in_started_in_another_browser_is_refused(server, cast, browser):
    """Login CSRF: the attacker starts a sign-in and has the victim's browser finish it; the state is not theirs."""
    attacker, victim = _context(browser), _context(browser)
    started = attacker.request.get(f"{server.base}/admin/sso/login/?next=/admin/", max_redirects=0)
    page = victim.new_page()
    page.goto(started.headers["location"])
    _provider_pages(page, server, "alice")
    assert "did not check out" in _refusal(page)
    assert not _signed_in(page, server)
    attacker.close()
    victim.close()


def test_an_id_token_with_another_nonce_is_refused(server, provider, cast, browser):
    """The provider signs a token for a nonce the gateway never sent (a replayed or injected response)."""
    context = _context(browser)
    page = _sso_tampered(context, server, "alice", nonce="a-nonce-the-gateway-never-sent")
    assert "nonce" in _refusal(page)
    assert not _signed_in(page, server)
    context.close()


def test_a_code_issued_to_another_client_is_refused(server, provider, cast, browser):
    """A code (and the tokens behind it) meant for another application at the same provider: wrong audience."""
    context = _context(browser)
    page = _sso_tampered(context, server, "alice", client_id="other-app")
    assert "did not check out" in _refusal(page)
    assert not _signed_in(page, server)
    context.close()


def test_an_address_outside_the_allowed_domains_is_refused(server, cast, browser):
    context = _context(browser)
    page = context.new_page()
    _sso(page, server, "eve")
    assert "e-mail domain may not sign in" in _refusal(page)
    assert not User.objects.filter(email="eve@evil.test").exists()
    context.close()


def test_someone_in_no_mapped_group_is_refused(server, cast, browser):
    context = _context(browser)
    page = context.new_page()
    _sso(page, server, "dave")
    assert "None of your groups gives access" in _refusal(page)
    assert not Membership.objects.filter(user__username="dave@acme.test").exists()
    context.close()


def test_password_login_is_off_but_the_break_glass_superuser_gets_in(server, cast, browser):
    context = _context(browser)
    page = context.new_page()
    page.goto(f"{server.base}/admin/login/")
    assert page.is_visible("text=Sign in with Test IdP")
    page.click("#break-glass summary")  # the password form is folded away
    page.fill("#id_username", "root")
    page.fill("#id_password", ROOT_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("h1:has-text('Gateway dashboard')", timeout=WAIT_MS)
    context.close()


def test_password_login_is_refused_for_everyone_else(server, cast, browser):
    admin = UserFactory(username="tess", is_staff=True)
    admin.set_password(ROOT_PASSWORD)
    admin.save()
    Membership.objects.create(user=admin, organization=cast["acme"], role="admin")
    context = _context(browser)
    page = context.new_page()
    page.goto(f"{server.base}/admin/login/")
    page.click("#break-glass summary")
    page.fill("#id_username", "tess")
    page.fill("#id_password", ROOT_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector(".errornote", state="attached", timeout=WAIT_MS)
    assert "correct username and password" in page.locator(".errornote").text_content()
    assert not _signed_in(page, server)
    context.close()


def _signed_in(page, server) -> bool:
    answer = page.request.get(f"{server.base}/admin/", max_redirects=0)
    return answer.status == 200
