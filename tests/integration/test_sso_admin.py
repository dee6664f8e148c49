"""Sign-on rules in the admin: Acme's owner bob manages Acme's rules; trent (Alpha's admin) only reads the
rules placing people in Alpha; charlie (Globex) sees none of Acme's. The login page offers the provider."""

from __future__ import annotations

import pytest
from django.test import override_settings

from apps.sso.models import GroupMapping
from apps.teams.models import AuditEvent
from tests.factories import MembershipFactory, OrganizationFactory, TeamFactory, UserFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

URL = "/admin/sso/groupmapping/"


@pytest.fixture
def world():
    acme = OrganizationFactory(name="Acme")
    alpha = TeamFactory(organization=acme, name="Alpha")
    globex = OrganizationFactory(name="Globex")
    omega = TeamFactory(organization=globex, name="Omega")
    people = {}
    for name, org, team, role in (
        ("bob", acme, None, "owner"),
        ("trent", acme, alpha, "admin"),
        ("charlie", globex, omega, "admin"),
    ):
        people[name] = UserFactory(username=name, is_staff=True)
        MembershipFactory(user=people[name], organization=org, team=team, role=role)
    rule = GroupMapping.objects.create(value="alpha-devs", organization=acme, team=alpha, role="member")
    GroupMapping.objects.create(value="omega-devs", organization=globex, team=omega, role="member")
    return {"acme": acme, "alpha": alpha, "globex": globex, "omega": omega, "rule": rule, **people}


def test_the_owner_adds_a_rule_for_their_organization(client, world):
    client.force_login(world["bob"])
    assert client.get(URL + "add/").status_code == 200
    answer = client.post(
        URL + "add/",
        {"kind": "group", "value": "acme-admins", "organization": world["acme"].pk, "team": "", "role": "admin"},
    )
    assert answer.status_code == 302, answer.content[:2000]
    assert GroupMapping.objects.filter(value="acme-admins", role="admin", team=None).exists()
    assert AuditEvent.objects.filter(action="sso_mapping.create", source="admin", actor=world["bob"]).exists()
    # Globex is not offered, and a forged post naming it is refused.
    answer = client.post(
        URL + "add/", {"kind": "group", "value": "grab", "organization": world["globex"].pk, "role": "owner"}
    )
    assert answer.status_code == 200 and not GroupMapping.objects.filter(value="grab").exists()
    listed = client.get(URL).content.decode()
    assert "alpha-devs" in listed and "omega-devs" not in listed


def test_a_team_admin_reads_their_teams_rules_and_changes_none(client, world):
    client.force_login(world["trent"])
    assert client.get(URL + "add/").status_code == 403
    assert "alpha-devs" in client.get(URL).content.decode()
    change = client.post(
        f"{URL}{world['rule'].pk}/change/",
        {"kind": "group", "value": "alpha-devs", "organization": world["acme"].pk, "team": world["alpha"].pk,
         "role": "owner"},
    )  # fmt: skip
    assert change.status_code == 403
    world["rule"].refresh_from_db()
    assert world["rule"].role == "member"


def test_an_outsider_sees_no_other_organizations_rules(client, world):
    client.force_login(world["charlie"])
    listed = client.get(URL).content.decode()
    assert "omega-devs" in listed and "alpha-devs" not in listed
    assert client.get(f"{URL}{world['rule'].pk}/change/").status_code in (302, 404)


def test_the_login_page_offers_the_provider_and_folds_the_password_form_when_it_is_off(client):
    assert "Sign in with" not in client.get("/admin/login/").content.decode()
    with override_settings(OIDC_ISSUER="https://idp.example", OIDC_CLIENT_ID="gw", OIDC_PROVIDER_NAME="Okta"):
        page = client.get("/admin/login/?next=/admin/teams/").content.decode()
        assert "Sign in with Okta" in page and "/admin/sso/login/?next=/admin/teams/" in page
        assert 'id="break-glass"' not in page
        with override_settings(ADMIN_PASSWORD_LOGIN=False):
            assert 'id="break-glass"' in client.get("/admin/login/").content.decode()


def test_sso_pages_answer_404_when_sso_is_not_configured_and_logout_still_works(client, world):
    assert client.get("/admin/sso/login/").status_code == 404
    assert client.get("/admin/sso/callback/?code=x&state=y").status_code == 404
    client.force_login(world["bob"])
    assert client.get("/admin/logout/").status_code == 405
    answer = client.post("/admin/logout/")
    assert answer.status_code == 302 and answer["Location"].endswith("/admin/login/")
    assert client.get("/admin/").status_code == 302
