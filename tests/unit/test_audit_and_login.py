"""Audit events in the admin (tenant admins only, read-only) and brute-force login protection (axes)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.keys.services import key_create
from apps.teams.audit import Actor
from apps.teams.models import AuditEvent


@pytest.fixture
def alpha_event(alice, alpha):
    key_create(actor=Actor(user=alice, source="api", ip_address="203.0.113.7"), team=alpha, alias="audited")
    return AuditEvent.objects.get(action__startswith="key.", team=alpha)


@pytest.fixture
def omega_event(charlie, omega):
    key_create(actor=Actor(user=charlie, source="admin"), team=omega, alias="omega-audited")
    return AuditEvent.objects.get(action__startswith="key.", team=omega)


@pytest.mark.django_db
def test_team_admin_sees_their_teams_audit_events_only(client, alice, alpha_event, omega_event):
    client.force_login(alice)
    response = client.get(reverse("admin:teams_auditevent_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "audited" in html and "203.0.113.7" in html
    assert "omega-audited" not in html
    assert client.get(reverse("admin:teams_auditevent_change", args=[omega_event.pk])).status_code in (302, 403, 404)
    assert client.get(reverse("admin:teams_auditevent_change", args=[alpha_event.pk])).status_code == 200


@pytest.mark.django_db
def test_audit_is_read_only_even_for_superusers(client, root, alpha_event):
    client.force_login(root)
    change_url = reverse("admin:teams_auditevent_change", args=[alpha_event.pk])
    page = client.get(change_url)
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    client.post(change_url, {"action": "forged"})
    assert client.get(reverse("admin:teams_auditevent_add")).status_code == 403
    assert (
        client.post(reverse("admin:teams_auditevent_delete", args=[alpha_event.pk]), {"post": "yes"}).status_code == 403
    )
    alpha_event.refresh_from_db()
    assert alpha_event.action != "forged"


@pytest.mark.django_db
def test_members_and_viewers_do_not_see_the_audit(client, bob, vera, alpha_event):
    for user in (bob, vera):
        client.force_login(user)
        assert client.get(reverse("admin:teams_auditevent_changelist")).status_code == 403


@pytest.mark.django_db
def test_org_admin_sees_every_team_of_the_org(client, olga, alpha_event):
    client.force_login(olga)
    assert b"audited" in client.get(reverse("admin:teams_auditevent_changelist")).content


@pytest.mark.django_db
def test_secrets_are_masked_in_audit_changes(alice, alpha):
    from apps.teams.audit import audit_record

    event = audit_record(actor=Actor(user=alice), action="x", obj=alpha, changes={"api_key": "sk-live-123", "n": 1})
    assert event.changes == {"api_key": "***", "n": 1}


@pytest.mark.django_db
def test_admin_login_locks_out_after_repeated_failures(client, alice, settings):
    url = reverse("admin:login")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = client.post(url, {"username": "alice", "password": "wrong"})
        assert response.status_code in (200, 429)
    # Even the right password is refused now, and no session is created.
    response = client.post(url, {"username": "alice", "password": "correct horse battery"})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get(reverse("admin:index")).status_code == 302


@pytest.mark.django_db
def test_a_correct_login_before_the_limit_works(client, alice, settings):
    url = reverse("admin:login")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        client.post(url, {"username": "alice", "password": "wrong"})
    response = client.post(url, {"username": "alice", "password": "correct horse battery"})
    assert response.status_code == 302
    assert client.get(reverse("admin:index")).status_code == 200


@pytest.mark.django_db
def test_admin_login_form_is_csrf_protected(alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    response = client.post(reverse("admin:login"), {"username": "alice", "password": "correct horse battery"})
    assert response.status_code == 403


@pytest.mark.django_db
def test_lockout_page_says_why_and_when(client, alice, settings):
    url = reverse("admin:login")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(url, {"username": "alice", "password": "wrong"})
    response = client.post(url, {"username": "alice", "password": "correct horse battery"})
    assert response.status_code == 429
    assert b"Too many failed logins" in response.content


@pytest.mark.django_db
def test_forged_forwarded_for_neither_dodges_the_lockout_nor_fakes_the_audit(client, alice, settings):
    settings.GATEWAY_TRUSTED_PROXY_COUNT = 0
    url = reverse("admin:login")
    for n in range(settings.AXES_FAILURE_LIMIT):
        client.post(url, {"username": f"guess{n}", "password": "x"}, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
    # Every guess came from the same socket address: that address is locked, whatever the header says.
    response = client.post(
        url, {"username": "alice", "password": "correct horse battery"}, HTTP_X_FORWARDED_FOR="1.2.3.4"
    )
    assert response.status_code == 429


def test_client_ip_trusts_only_our_proxies(rf, settings):
    from apps.teams.client_ip import client_ip

    request = rf.get("/", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9", REMOTE_ADDR="10.0.0.2")
    settings.GATEWAY_TRUSTED_PROXY_COUNT = 0
    assert client_ip(request) == "10.0.0.2"
    settings.GATEWAY_TRUSTED_PROXY_COUNT = 1
    assert client_ip(request) == "203.0.113.9"  # what our proxy saw, not what the client claimed
    settings.GATEWAY_TRUSTED_PROXY_COUNT = 2
    assert client_ip(request) == "6.6.6.6"
    garbage = rf.get("/", HTTP_X_FORWARDED_FOR="<script>", REMOTE_ADDR="10.0.0.2")
    assert client_ip(garbage) == "10.0.0.2"


@pytest.mark.django_db
def test_audit_records_the_trusted_client_address(rf, alice, alpha, settings):
    from apps.teams.audit import actor_from_request

    settings.GATEWAY_TRUSTED_PROXY_COUNT = 1
    request = rf.post("/", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9", REMOTE_ADDR="10.0.0.2")
    request.user = alice
    key_create(actor=actor_from_request(request, "admin"), team=alpha, alias="from-somewhere")
    event = AuditEvent.objects.get(action="key.create")
    assert (event.ip_address, event.source, event.actor_label) == ("203.0.113.9", "admin", "alice")


@pytest.mark.django_db
def test_audit_team_filter_offers_only_visible_teams(client, alice, alpha_event, omega_event):
    client.force_login(alice)
    html = client.get(reverse("admin:teams_auditevent_changelist")).content.decode()
    assert "Alpha" in html and "Omega" not in html
    assert "alias" in html  # the changed fields column


@pytest.mark.django_db
def test_rest_api_changes_are_audited_with_who_what_and_where(client, alice, alpha):
    client.force_login(alice)
    response = client.post(
        "/api/v1/keys/",
        {"team": alpha.pk, "alias": "via-api", "rpm_limit": 5},
        content_type="application/json",
        REMOTE_ADDR="192.0.2.44",
    )
    assert response.status_code == 201, response.content
    event = AuditEvent.objects.get(action="key.create", object_repr="via-api")
    assert (event.actor, event.source, event.ip_address, event.team) == (alice, "api", "192.0.2.44", alpha)
    assert event.changes.get("rpm_limit") == 5
    assert response.json()["key"] not in str(event.changes)
