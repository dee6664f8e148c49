"""The key admin, as real pages through the Django test client: tenants, secret once, actions."""

import re
from decimal import Decimal

import pytest
from django.test import Client

from apps.keys.hashing import keyed_hash
from apps.keys.models import VirtualKey
from tests.factories import VirtualKeyFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/keys/virtualkey/"
ADD = "/admin/keys/virtualkey/add/"


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def change_url(key) -> str:
    return f"/admin/keys/virtualkey/{key.pk}/change/"


def key_form(team, **overrides) -> dict:
    data = {
        "alias": "from-admin",
        "team": team.pk,
        "user": "",
        "allowed_models": "",
        "expires_at_0": "",
        "expires_at_1": "",
        "rpm_limit": "",
        "tpm_limit": "",
        "max_parallel_requests": "",
        "max_budget": "",
        "soft_budget": "",
        "budget_duration": "",
        "model_limits": "{}",
        "priority": "1",
        "session_max_budget": "",
        "session_max_iterations": "",
        "metadata": "{}",
    }
    data.update(overrides)
    return data


def shown_secrets(html: str) -> list[str]:
    return re.findall(r'data-testid="issued-secret">([^<]+)<', html)


@pytest.fixture
def alices_key(alpha, alice):
    return VirtualKeyFactory(team=alpha, user=alice, alias="alice-key")


def test_charlie_cannot_see_or_reach_alices_key(alices_key, charlie):
    client = browser(charlie)
    page = client.get(CHANGELIST)
    assert page.status_code == 200
    assert "alice-key" not in page.content.decode()
    response = client.get(change_url(alices_key))
    assert response.status_code == 302 and "alice-key" not in response.content.decode()
    response = client.post(change_url(alices_key), key_form(alices_key.team, rpm_limit="1"))
    assert response.status_code in (302, 403)
    alices_key.refresh_from_db()
    assert alices_key.rpm_limit is None


def test_charlie_cannot_pick_alpha_when_adding_a_key(alpha, omega, charlie):
    client = browser(charlie)
    page = client.get(ADD).content.decode()
    assert "Omega" in page and "Alpha" not in page
    response = client.post(ADD, key_form(alpha, alias="sneaky"))
    assert response.status_code == 200  # the form again, with an error on "team"
    assert "Select a valid choice" in response.content.decode()
    assert not VirtualKey.objects.filter(alias="sneaky").exists()


def test_charlie_cannot_revoke_alices_key_with_an_action(alices_key, charlie):
    browser(charlie).post(CHANGELIST, {"action": "revoke_keys", "_selected_action": [alices_key.pk]})
    alices_key.refresh_from_db()
    assert alices_key.revoked_at is None


def test_bob_sees_only_his_keys(alpha, alices_key, bob):
    VirtualKeyFactory(team=alpha, user=bob, alias="bob-key")
    page = browser(bob).get(CHANGELIST).content.decode()
    assert "bob-key" in page and "alice-key" not in page
    assert browser(bob).get(change_url(alices_key)).status_code == 302


def test_vera_sees_her_key_read_only(alpha, vera):
    own = VirtualKeyFactory(team=alpha, user=vera, alias="vera-key")
    client = browser(vera)
    page = client.get(change_url(own))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()  # a read-only view
    assert client.post(change_url(own), key_form(alpha, rpm_limit="5")).status_code == 403
    assert client.get(ADD).status_code == 403
    client.post(CHANGELIST, {"action": "revoke_keys", "_selected_action": [own.pk]})
    own.refresh_from_db()
    assert own.rpm_limit is None and own.revoked_at is None


def test_alice_creates_a_key_and_sees_the_secret_exactly_once(alpha, alice, bob):
    client = browser(alice)
    response = client.post(ADD, key_form(alpha, alias="for-bob", user=bob.pk, allowed_models="gpt-4o-mini, gpt-4o"))
    assert response.status_code == 302  # POST/redirect/GET: reloading the page that shows the secret creates nothing
    issued_url = response["Location"]
    assert issued_url.startswith("/admin/keys/virtualkey/issued/")
    response = client.get(issued_url)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secrets = shown_secrets(response.content.decode())
    assert secrets[0] not in issued_url
    assert len(secrets) == 1 and secrets[0].startswith("sk-")
    key = VirtualKey.objects.get(alias="for-bob")
    assert key.key_hash == keyed_hash(secrets[0])
    assert key.user == bob and key.allowed_models == ["gpt-4o-mini", "gpt-4o"] and key.created_by == alice
    for url in (CHANGELIST, change_url(key), "/admin/"):
        assert secrets[0] not in client.get(url).content.decode()
    reloaded = client.get(issued_url)  # the reload: no second key, no secret, a page saying why
    assert reloaded.status_code == 410 and shown_secrets(reloaded.content.decode()) == []
    assert 'data-testid="secret-gone"' in reloaded.content.decode()
    assert VirtualKey.objects.filter(alias="for-bob").count() == 1


def test_admin_key_creation_stays_within_the_team(alpha, alice):
    alpha.max_budget = Decimal("10")
    alpha.allowed_models = ["gpt-4o-mini"]
    alpha.save()
    client = browser(alice)
    response = client.post(ADD, key_form(alpha, alias="too-big", max_budget="50", allowed_models="gpt-4o"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "cannot exceed the team&#x27;s max_budget" in html or "cannot exceed the team's max_budget" in html
    assert "not allowed for the team" in html
    assert shown_secrets(html) == []
    assert not VirtualKey.objects.filter(alias="too-big").exists()


def test_a_key_never_moves_team_or_owner(alpha, omega, alices_key, alice, bob):
    client = browser(alice)
    page = client.get(change_url(alices_key)).content.decode()
    assert 'name="team"' not in page and 'name="user"' not in page
    response = client.post(change_url(alices_key), key_form(omega, user=bob.pk, rpm_limit="7"))
    assert response.status_code == 302
    alices_key.refresh_from_db()
    assert alices_key.team == alpha and alices_key.user == alice and alices_key.rpm_limit == 7


def test_actions_rotate_block_unblock_revoke(alpha, alice, alices_key):
    client = browser(alice)
    old_hash = alices_key.key_hash
    response = client.post(CHANGELIST, {"action": "rotate_keys", "_selected_action": [alices_key.pk]}, follow=True)
    secrets = shown_secrets(response.content.decode())
    alices_key.refresh_from_db()
    assert len(secrets) == 1 and alices_key.key_hash == keyed_hash(secrets[0]) != old_hash

    client.post(CHANGELIST, {"action": "block_keys", "_selected_action": [alices_key.pk]})
    alices_key.refresh_from_db()
    assert alices_key.status == "blocked"
    client.post(CHANGELIST, {"action": "unblock_keys", "_selected_action": [alices_key.pk]})
    alices_key.refresh_from_db()
    assert alices_key.status == "active"
    client.post(CHANGELIST, {"action": "revoke_keys", "_selected_action": [alices_key.pk]})
    alices_key.refresh_from_db()
    assert alices_key.status == "revoked"
    page = client.get(CHANGELIST + "?status=revoked").content.decode()
    assert "alice-key" in page
    assert "alice-key" not in client.get(CHANGELIST + "?status=active").content.decode()


def test_bulk_revoke_skips_what_the_user_may_not_change(alpha, alice, bob, alices_key):
    bobs = VirtualKeyFactory(team=alpha, user=bob, alias="bob-key")
    browser(bob).post(CHANGELIST, {"action": "revoke_keys", "_selected_action": [alices_key.pk, bobs.pk]})
    alices_key.refresh_from_db()
    bobs.refresh_from_db()
    assert alices_key.revoked_at is None and bobs.revoked_at is not None


def test_filters_by_team_status_and_model(alpha, omega, root):
    VirtualKeyFactory(team=alpha, alias="alpha-gpt", allowed_models=["gpt-4o"])
    VirtualKeyFactory(team=omega, alias="omega-claude", allowed_models=["claude-3-5-haiku"])
    client = browser(root)
    page = client.get(f"{CHANGELIST}?team__id__exact={alpha.pk}").content.decode()
    assert "alpha-gpt" in page and "omega-claude" not in page
    page = client.get(f"{CHANGELIST}?model=claude-3-5-haiku").content.decode()
    assert "omega-claude" in page and "alpha-gpt" not in page
    page = client.get(f"{CHANGELIST}?q=omega").content.decode()
    assert "omega-claude" in page and "alpha-gpt" not in page


def test_team_filter_lists_only_visible_teams(alpha, omega, alice):
    VirtualKeyFactory(team=alpha, user=alice)
    page = browser(alice).get(CHANGELIST).content.decode()
    assert "Omega" not in page


def test_admin_refuses_malformed_json_fields(alpha, alice, alices_key):
    client = browser(alice)
    response = client.post(ADD, key_form(alpha, alias="bad-json", model_limits="[1, 2]", metadata='"text"'))
    html = response.content.decode()
    assert response.status_code == 200 and "must be an object" in html
    assert not VirtualKey.objects.filter(alias="bad-json").exists()
    response = client.post(change_url(alices_key), key_form(alpha, model_limits='{"gpt-4o": {"rpm_limit": -5}}'))
    assert response.status_code == 200 and "non-negative" in response.content.decode()
    alices_key.refresh_from_db()
    assert alices_key.model_limits == {}


def test_change_page_buttons_rotate_block_and_revoke_one_key(alpha, alice, alices_key):
    client = browser(alice)
    page = client.get(change_url(alices_key)).content.decode()
    for verb in ("rotate", "block", "revoke"):
        assert f'data-testid="key-{verb}"' in page
    base = f"/admin/keys/virtualkey/{alices_key.pk}"
    assert client.get(f"{base}/rotate/").status_code == 405  # only a POST (with CSRF) changes anything
    response = client.post(f"{base}/rotate/", follow=True)
    secrets = shown_secrets(response.content.decode())
    alices_key.refresh_from_db()
    assert len(secrets) == 1 and alices_key.key_hash == keyed_hash(secrets[0])
    assert client.post(f"{base}/block/").status_code == 302
    alices_key.refresh_from_db()
    assert alices_key.status == "blocked"
    assert 'data-testid="key-unblock"' in client.get(change_url(alices_key)).content.decode()
    client.post(f"{base}/revoke/")
    alices_key.refresh_from_db()
    assert alices_key.status == "revoked"
    assert 'data-testid="key-rotate"' not in client.get(change_url(alices_key)).content.decode()


def test_change_page_buttons_are_not_for_outsiders_members_or_viewers(alpha, alices_key, bob, vera, charlie):
    base = f"/admin/keys/virtualkey/{alices_key.pk}"
    assert browser(charlie).post(f"{base}/revoke/").status_code == 404
    assert browser(bob).post(f"{base}/rotate/").status_code == 404
    own = VirtualKeyFactory(team=alpha, user=vera)
    page = browser(vera).get(change_url(own)).content.decode()
    assert 'data-testid="key-revoke"' not in page
    assert browser(vera).post(f"/admin/keys/virtualkey/{own.pk}/revoke/").status_code == 403
    alices_key.refresh_from_db()
    own.refresh_from_db()
    assert alices_key.status == "active" and own.status == "active"


def test_key_buttons_need_the_csrf_token(alpha, alice, alices_key):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(f"/admin/keys/virtualkey/{alices_key.pk}/revoke/").status_code == 403
    alices_key.refresh_from_db()
    assert alices_key.revoked_at is None


def test_emptied_json_boxes_mean_nothing_not_null(alpha, alice, alices_key):
    client = browser(alice)
    response = client.post(ADD, key_form(alpha, alias="empty-json", model_limits="", metadata=""), follow=True)
    assert len(shown_secrets(response.content.decode())) == 1
    key = VirtualKey.objects.get(alias="empty-json")
    assert key.model_limits == {} and key.metadata == {}
    alices_key.model_limits = {"gpt-4o": {"rpm_limit": 5}}
    alices_key.save()
    assert client.post(change_url(alices_key), key_form(alpha, model_limits="")).status_code == 302
    alices_key.refresh_from_db()
    assert alices_key.model_limits == {}


def test_a_crafted_initial_input_cannot_smuggle_unvalidated_json(alpha, alice, alices_key):
    # Fields with callable defaults compare against the posted "initial-" input: claim nothing changed.
    form = key_form(alpha, model_limits="[1, 2]", metadata='"text"')
    form.update({"initial-model_limits": "[1, 2]", "initial-metadata": '"text"'})
    response = browser(alice).post(change_url(alices_key), form)
    assert response.status_code == 200 and "must be an object" in response.content.decode()
    alices_key.refresh_from_db()
    assert alices_key.model_limits == {} and alices_key.metadata == {}


def test_admin_writes_are_audited_as_admin_without_secrets(alpha, alice):
    from apps.teams.models import AuditEvent

    client = browser(alice)
    secret = shown_secrets(client.post(ADD, key_form(alpha, alias="audited"), follow=True).content.decode())[0]
    key = VirtualKey.objects.get(alias="audited")
    client.post(CHANGELIST, {"action": "rotate_keys", "_selected_action": [key.pk]})
    events = list(AuditEvent.objects.filter(object_id=str(key.pk)).order_by("created_at"))
    assert [e.action for e in events] == ["key.create", "key.rotate"]
    assert all(e.source == "admin" and e.actor == alice and e.team == alpha for e in events)
    assert all(secret not in str(e.changes) for e in events)


def test_alice_turns_on_the_budget_clamp_in_the_admin(alpha, alice, alices_key):
    client = browser(alice)
    assert 'name="budget_clamp_max_tokens"' in client.get(change_url(alices_key)).content.decode()
    response = client.post(change_url(alices_key), key_form(alpha, budget_clamp_max_tokens="on"))
    assert response.status_code == 302
    alices_key.refresh_from_db()
    assert alices_key.budget_clamp_max_tokens is True


def test_a_second_key_with_an_alias_the_team_uses_is_a_form_error(alpha, omega, alice, alices_key, charlie):
    client = browser(alice)
    response = client.post(ADD, key_form(alpha, alias="alice-key"))
    assert response.status_code == 200
    assert "another key in this team already has this alias" in response.content.decode()
    assert VirtualKey.objects.filter(alias="alice-key").count() == 1
    other = VirtualKeyFactory(team=alpha, user=alice, alias="other")
    response = client.post(change_url(other), key_form(alpha, alias="alice-key"))
    assert response.status_code == 200 and "already has this alias" in response.content.decode()
    # Another team may use the same alias, and keys without an alias never collide.
    assert browser(charlie).post(ADD, key_form(omega, alias="alice-key")).status_code == 302
    for _ in range(2):
        assert client.post(ADD, key_form(alpha, alias="")).status_code == 302
