"""Admin pages for teams, people, memberships, deployments and tokens, for every member of the cast."""

import re

import pytest
from django.contrib import admin
from django.test import Client

from apps.keys.hashing import keyed_hash
from apps.keys.models import ApiToken
from apps.proxy.models import ModelDeployment
from apps.teams.models import Membership, Team, User
from tests.factories import DeploymentFactory, VirtualKeyFactory

pytestmark = pytest.mark.django_db

UPSTREAM_SECRET = "sk-upstream-NEVER-IN-HTML-987"


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def cast(alice, bob, vera, olga, charlie, root):
    return {"alice": alice, "bob": bob, "vera": vera, "olga": olga, "charlie": charlie, "root": root}


def test_every_admin_page_answers_every_cast_member_without_an_error(cast, alpha):
    VirtualKeyFactory(team=alpha, user=cast["alice"])
    DeploymentFactory(organization=alpha.organization)
    for name, user in cast.items():
        client = browser(user)
        assert client.get("/admin/").status_code == 200, name
        for model in admin.site._registry:
            opts = model._meta
            for suffix in ("", "add/"):
                url = f"/admin/{opts.app_label}/{opts.model_name}/{suffix}"
                status = client.get(url).status_code
                assert status in (200, 302, 403), (name, url, status)


def test_charlie_sees_no_acme_team_person_or_membership(alpha, alice, bob, charlie):
    client = browser(charlie)
    assert "Alpha" not in client.get("/admin/teams/team/").content.decode()
    users_page = client.get("/admin/teams/user/").content.decode()
    assert "alice" not in users_page and "bob" not in users_page
    assert "alice" not in client.get("/admin/teams/membership/").content.decode()
    assert client.get(f"/admin/teams/team/{alpha.pk}/change/").status_code == 302
    assert client.get(f"/admin/teams/user/{alice.pk}/change/").status_code == 302
    membership = Membership.objects.get(user=alice)
    assert client.post(f"/admin/teams/membership/{membership.pk}/delete/", {"post": "yes"}).status_code == 302
    assert Membership.objects.filter(pk=membership.pk).exists()


def test_charlie_cannot_add_himself_to_alpha(alpha, charlie):
    client = browser(charlie)
    page = client.get("/admin/teams/membership/add/").content.decode()
    assert "Alpha" not in page
    response = client.post(
        "/admin/teams/membership/add/", {"user": charlie.pk, "team": alpha.pk, "organization": "", "role": "admin"}
    )
    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not Membership.objects.filter(user=charlie, team=alpha).exists()


def test_team_admin_renames_the_team_but_the_ceiling_is_read_only(alpha, alice):
    client = browser(alice)
    page = client.get(f"/admin/teams/team/{alpha.pk}/change/").content.decode()
    assert 'name="name"' in page and 'name="max_budget"' not in page
    response = client.post(f"/admin/teams/team/{alpha.pk}/change/", {"name": "Alpha Prime", "max_budget": "999"})
    assert response.status_code == 302
    alpha.refresh_from_db()
    assert alpha.name == "Alpha Prime" and alpha.max_budget is None


def test_org_admin_sets_team_limits_within_the_organization(acme, alpha, olga):
    acme.max_budget = 100
    acme.save()
    client = browser(olga)
    form = {"name": "Alpha", "allowed_models": "", "model_limits": "{}", "budget_duration": "", "max_budget": "150"}
    response = client.post(f"/admin/teams/team/{alpha.pk}/change/", form)
    assert response.status_code == 200 and "cannot exceed the organization" in response.content.decode()
    form["max_budget"] = "50"
    assert client.post(f"/admin/teams/team/{alpha.pk}/change/", form).status_code == 302
    alpha.refresh_from_db()
    assert alpha.max_budget == 50


def test_alice_adds_a_new_person_to_her_team(alpha, omega, alice):
    client = browser(alice)
    page = client.get("/admin/teams/user/add/").content.decode()
    assert "Alpha" in page and "Omega" not in page
    form = {
        "username": "newbie",
        "password1": "a long passphrase 42",
        "password2": "a long passphrase 42",
        "email": "",
        "first_name": "",
        "last_name": "",
        "team": alpha.pk,
        "role": "member",
    }
    response = client.post("/admin/teams/user/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    newbie = User.objects.get(username="newbie")
    assert newbie.check_password("a long passphrase 42") and newbie.is_staff and not newbie.is_superuser
    assert Membership.objects.get(user=newbie).team == alpha
    form.update(username="intruder", team=omega.pk)
    assert client.post("/admin/teams/user/add/", form).status_code == 200
    assert not User.objects.filter(username="intruder").exists()


def test_alice_cannot_edit_other_people_or_make_herself_superuser(alice, bob):
    client = browser(alice)
    page = client.get(f"/admin/teams/user/{bob.pk}/change/").content.decode()
    assert 'name="email"' not in page
    client.post(f"/admin/teams/user/{bob.pk}/change/", {"email": "evil@example.com"})
    client.post(f"/admin/teams/user/{alice.pk}/change/", {"email": "alice@example.com", "is_superuser": "on"})
    bob.refresh_from_db()
    alice.refresh_from_db()
    assert bob.email == "bob@example.com" and not alice.is_superuser


def test_deployment_credentials_are_write_only_in_the_admin(root):
    client = browser(root)
    form = {
        "model_name": "gpt-4o",
        "provider": "openai",
        "model": "gpt-4o",
        "organization": "",
        "enabled": "on",
        "api_base": "https://api.example.com/v1",
        "api_version": "",
        "region": "",
        "api_key": UPSTREAM_SECRET,
        "input_cost_per_token": "",
        "output_cost_per_token": "",
        "cached_input_cost_per_token": "",
        "rpm_limit": "",
        "tpm_limit": "",
        "max_parallel_requests": "",
        "weight": "1",
        "priority": "0",
        "timeout_seconds": "",
        "extra": "{}",
    }
    response = client.post("/admin/proxy/modeldeployment/add/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    deployment = ModelDeployment.objects.get()
    assert deployment.get_credentials() == UPSTREAM_SECRET
    for url in ("/admin/proxy/modeldeployment/", f"/admin/proxy/modeldeployment/{deployment.pk}/change/"):
        html = client.get(url).content.decode()
        assert UPSTREAM_SECRET not in html and deployment.credentials_encrypted not in html
        assert "set" in html
    # An empty submit keeps the key; a metadata address is refused on the form.
    form.update(api_key="", rpm_limit="10")
    assert client.post(f"/admin/proxy/modeldeployment/{deployment.pk}/change/", form).status_code == 302
    deployment.refresh_from_db()
    assert deployment.get_credentials() == UPSTREAM_SECRET and deployment.rpm_limit == 10
    form.update(api_base="http://169.254.169.254/latest/")
    response = client.post(f"/admin/proxy/modeldeployment/{deployment.pk}/change/", form)
    assert response.status_code == 200 and "link-local" in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.api_base == "https://api.example.com/v1"
    # A line break in the model would end up in a response header: a form error, nothing saved.
    form.update(api_base="https://api.example.com/v1", model="gpt-4o\r\nx-injected: 1")
    response = client.post(f"/admin/proxy/modeldeployment/{deployment.pk}/change/", form)
    assert response.status_code == 200 and "control characters" in response.content.decode()
    deployment.refresh_from_db()
    assert deployment.model == "gpt-4o"


def test_team_admin_reads_but_does_not_change_org_deployments(acme, alice, charlie):
    deployment = DeploymentFactory(organization=acme, model_name="acme-only")
    assert "acme-only" not in browser(charlie).get("/admin/proxy/modeldeployment/").content.decode()
    page = browser(alice).get(f"/admin/proxy/modeldeployment/{deployment.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()


def test_api_token_created_in_the_admin_is_shown_once(alice, bob):
    client = browser(alice)
    response = client.post(
        "/admin/keys/apitoken/add/", {"name": "laptop", "expires_at_0": "", "expires_at_1": ""}, follow=True
    )
    secrets = re.findall(r'data-testid="issued-secret">([^<]+)<', response.content.decode())
    assert len(secrets) == 1
    token = ApiToken.objects.get(user=alice)
    assert token.token_hash == keyed_hash(secrets[0])
    assert secrets[0] not in client.get("/admin/keys/apitoken/").content.decode()
    assert "laptop" not in browser(bob).get("/admin/keys/apitoken/").content.decode()
    browser(bob).post(f"/admin/keys/apitoken/{token.pk}/delete/", {"post": "yes"})
    assert ApiToken.objects.filter(pk=token.pk).exists()
    client.post(f"/admin/keys/apitoken/{token.pk}/delete/", {"post": "yes"})
    assert not ApiToken.objects.filter(pk=token.pk).exists()


def test_olga_sees_every_acme_team(acme, alpha, omega, olga):
    Team.objects.create(organization=acme, name="Beta")
    page = browser(olga).get("/admin/teams/team/").content.decode()
    assert "Alpha" in page and "Beta" in page and "Omega" not in page


def test_alice_changes_roles_in_her_team_but_appoints_no_owner(alpha, alice, bob):
    membership = Membership.objects.get(user=bob)
    client = browser(alice)
    url = f"/admin/teams/membership/{membership.pk}/change/"
    assert client.post(url, {"role": "admin"}).status_code == 302
    membership.refresh_from_db()
    assert membership.role == "admin"
    response = client.post(url, {"role": "owner"})
    assert response.status_code == 200 and "Only organization admins" in response.content.decode()
    membership.refresh_from_db()
    assert membership.role == "admin"


def test_bob_the_member_cannot_manage_memberships(alpha, alice, bob):
    membership = Membership.objects.get(user=alice)
    client = browser(bob)
    assert client.get("/admin/teams/membership/add/").status_code == 403
    assert client.post(f"/admin/teams/membership/{membership.pk}/change/", {"role": "member"}).status_code in (302, 403)
    client.post(f"/admin/teams/membership/{membership.pk}/delete/", {"post": "yes"})
    membership.refresh_from_db()
    assert membership.role == "admin"


def test_staff_without_memberships_sees_an_empty_admin(alpha, alice):
    VirtualKeyFactory(team=alpha, user=alice, alias="alice-key")
    drifter = User.objects.create_user("drifter", password="x", is_staff=True)
    client = browser(drifter)
    index = client.get("/admin/").content.decode()
    assert "Virtual keys" not in index and "Teams" not in index
    assert client.get("/admin/keys/virtualkey/").status_code == 403
    assert client.get("/admin/teams/team/").status_code == 403
