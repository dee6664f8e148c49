"""The admin answers tenant probes the same whatever the hidden data is (issue 11, items 1, 6 and 9).

- A list filter on a field the changelist does not offer (a password hash, deployment ciphertext) is a
  400, and the same 400 whether the guessed prefix is right or wrong: nothing to bisect.
- Adding a person with a role the creator may not grant creates nothing.
- "View on site" (``/admin/r/<content type>/<id>/``) answers one 404 for other tenants' objects and
  missing ones, even with DEBUG on.
"""

from __future__ import annotations

import pytest
from django.contrib.contenttypes.models import ContentType
from django.test import Client

from apps.teams.models import AuditEvent, Membership, Team, User
from tests.factories import DeploymentFactory

pytestmark = pytest.mark.django_db


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def probe(client: Client, url: str) -> tuple[int, bytes]:
    response = client.get(url)
    return response.status_code, response.content


def test_team_admin_cannot_bisect_a_password_hash_through_the_people_list(alice, bob):
    right_prefix = bob.password.split("$")[0]  # the hasher's name, as a real probe would start
    client = browser(alice)
    assert "bob" in client.get("/admin/teams/user/").content.decode()  # bob is on alice's list
    answers = {
        guess: probe(client, f"/admin/teams/user/?password__regex=^{guess}")
        for guess in (right_prefix, "argon2", "zzz")
    }
    assert {status for status, _ in answers.values()} == {400}
    assert len({body for _, body in answers.values()}) == 1
    # The exact probe, with a username filter the list does not offer either.
    assert client.get(f"/admin/teams/user/?username=bob&password__regex=^{right_prefix}").status_code == 400


def test_even_a_superuser_cannot_filter_people_by_password(root, bob):
    client = browser(root)
    assert client.get("/admin/teams/user/?password__startswith=md5").status_code == 400
    assert client.get("/admin/teams/user/?password__isnull=False").status_code == 400
    assert client.get("/admin/teams/user/?is_superuser__exact=0").status_code == 200  # an offered filter


def test_team_admin_cannot_read_deployment_ciphertext_through_a_filter(acme, alice):
    deployment = DeploymentFactory(organization=acme, model_name="acme-secretive")
    deployment.set_credentials("sk-upstream-secret-123")
    deployment.save()
    client = browser(alice)
    assert "acme-secretive" in client.get("/admin/proxy/modeldeployment/").content.decode()
    right_prefix = deployment.credentials_encrypted[:5]
    answers = {
        guess: probe(client, f"/admin/proxy/modeldeployment/?credentials_encrypted__startswith={guess}")
        for guess in (right_prefix, "zzzzz")
    }
    assert {status for status, _ in answers.values()} == {400}
    assert len({body for _, body in answers.values()}) == 1
    offered = client.get(f"/admin/proxy/modeldeployment/?organization__id__exact={acme.pk}")
    assert offered.status_code == 200 and "acme-secretive" in offered.content.decode()


def test_refused_role_creates_no_account(alpha, alice):
    """alice runs Alpha but may not appoint owners: the error must come with no account behind it."""
    form = {
        "username": "would-be-owner",
        "password1": "a long passphrase 42",
        "password2": "a long passphrase 42",
        "email": "",
        "first_name": "",
        "last_name": "",
        "team": alpha.pk,
        "role": "owner",
    }
    response = browser(alice).post("/admin/teams/user/add/", form)
    assert response.status_code == 200
    assert "Only organization admins may appoint owners." in response.content.decode()
    assert not User.objects.filter(username="would-be-owner").exists()
    assert not AuditEvent.objects.filter(action="user.create").exists()
    # The same person as a member is fine: the form and the service agree.
    form["role"] = "member"
    assert browser(alice).post("/admin/teams/user/add/", form).status_code == 302
    assert Membership.objects.get(user__username="would-be-owner").team == alpha


def test_view_on_site_says_nothing_about_other_tenants_objects(settings, alpha, omega, charlie):
    settings.DEBUG = True  # the technical 404 page shows the reason, which is what leaked
    team_type = ContentType.objects.get_for_model(Team).pk
    client = browser(charlie)

    def answer(object_id) -> tuple[int, str]:
        url = f"/admin/r/{team_type}/{object_id}/"
        response = client.get(url)
        return response.status_code, response.content.decode().replace(url, "URL").replace(url[1:], "URL")

    missing = answer(999999)
    assert missing[0] == 404
    assert answer(alpha.pk) == missing  # Acme's team: exists, but not charlie's
    assert answer(omega.pk) == missing  # his own team has no public page either
    for odd in ("not-a-number", "99999999999999999999999"):
        assert answer(odd)[0] == 404
    assert client.get("/admin/r/999999/1/").status_code == 404
