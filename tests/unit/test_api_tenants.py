"""The provisioning API for organizations, teams, members, users, API tokens, and the schema."""

import pytest
from rest_framework.test import APIClient

from apps.keys.hashing import keyed_hash
from apps.keys.models import ApiToken
from apps.teams.models import Membership, Organization, Team, User
from tests.support.api import client_for

pytestmark = pytest.mark.django_db


def test_master_key_provisions_a_tenant_from_scratch(master):
    response = master.post("/api/v1/organizations/", {"name": "Initech", "max_budget": "100"}, format="json")
    assert response.status_code == 201, response.content
    org_id = response.json()["id"]
    response = master.post(
        "/api/v1/teams/",
        {"organization": org_id, "name": "Core", "rpm_limit": 100, "max_budget": "50", "budget_duration": "1mo"},
        format="json",
    )
    assert response.status_code == 201, response.content
    team_id = response.json()["id"]
    response = master.post(
        "/api/v1/users/",
        {"username": "peter", "password": "a long passphrase 42", "team": team_id, "role": "admin"},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert "password" not in response.json()
    peter = User.objects.get(username="peter")
    assert peter.check_password("a long passphrase 42") and peter.is_staff
    assert Membership.objects.get(user=peter).role == "admin"
    response = master.post("/api/v1/keys/", {"team": team_id, "user": peter.pk, "max_budget": "60"}, format="json")
    assert response.status_code == 400 and "max_budget" in response.json()
    response = master.post("/api/v1/keys/", {"team": team_id, "user": peter.pk, "max_budget": "5"}, format="json")
    assert response.status_code == 201 and response.json()["key"].startswith("sk-")


def test_charlie_sees_nothing_of_acme(acme, alpha, alice, charlie):
    client = client_for(charlie)
    assert "Acme" not in client.get("/api/v1/organizations/").content.decode()
    assert "Alpha" not in client.get("/api/v1/teams/").content.decode()
    assert "alice" not in client.get("/api/v1/users/").content.decode()
    assert "alice" not in client.get("/api/v1/members/").content.decode()
    assert client.get(f"/api/v1/teams/{alpha.pk}/").status_code == 404
    assert client.patch(f"/api/v1/teams/{alpha.pk}/", {"name": "Pwned"}, format="json").status_code == 404
    assert client.get(f"/api/v1/organizations/{acme.pk}/").status_code == 404
    assert client.get(f"/api/v1/users/{alice.pk}/").status_code == 404
    membership = Membership.objects.get(user=alice)
    assert client.delete(f"/api/v1/members/{membership.pk}/").status_code == 404
    response = client.post("/api/v1/members/", {"user": charlie.pk, "team": alpha.pk, "role": "admin"}, format="json")
    assert response.status_code == 400 and "team" in response.json()
    assert not Membership.objects.filter(user=charlie, team=alpha).exists()
    assert Team.objects.get(pk=alpha.pk).name == "Alpha"


def test_only_a_superuser_creates_organizations(olga, root):
    response = client_for(olga).post("/api/v1/organizations/", {"name": "Mine"}, format="json")
    assert response.status_code == 403
    response = client_for(root).post("/api/v1/organizations/", {"name": "Mine"}, format="json")
    assert response.status_code == 201
    assert Organization.objects.filter(name="Mine").count() == 1


def test_team_admin_renames_but_cannot_raise_the_ceiling(alpha, alice, bob):
    client = client_for(alice)
    assert client.patch(f"/api/v1/teams/{alpha.pk}/", {"name": "Alpha 2"}, format="json").status_code == 200
    assert client.patch(f"/api/v1/teams/{alpha.pk}/", {"max_budget": "1000"}, format="json").status_code == 403
    assert client_for(bob).patch(f"/api/v1/teams/{alpha.pk}/", {"name": "Bob's"}, format="json").status_code == 403
    alpha.refresh_from_db()
    assert alpha.name == "Alpha 2" and alpha.max_budget is None


def test_org_admin_creates_teams_within_the_org_budget(acme, olga):
    acme.max_budget = 100
    acme.save()
    client = client_for(olga)
    response = client.post(
        "/api/v1/teams/", {"organization": acme.pk, "name": "Beta", "max_budget": "101"}, format="json"
    )
    assert response.status_code == 400 and "max_budget" in response.json()
    response = client.post(
        "/api/v1/teams/", {"organization": acme.pk, "name": "Beta", "max_budget": "99"}, format="json"
    )
    assert response.status_code == 201
    response = client.post("/api/v1/teams/", {"organization": acme.pk, "name": "Beta"}, format="json")
    assert response.status_code == 400  # duplicate name in the org: a field message, not a 500


def test_alice_adds_a_person_to_alpha_and_changes_their_role(alpha, alice, bob):
    client = client_for(alice)
    response = client.post(
        "/api/v1/users/", {"username": "newbie", "email": "n@example.com", "team": alpha.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    newbie = User.objects.get(username="newbie")
    assert not newbie.has_usable_password()
    membership = Membership.objects.get(user=newbie, team=alpha)
    response = client.patch(f"/api/v1/members/{membership.pk}/", {"role": "admin"}, format="json")
    assert response.status_code == 200 and response.json()["role"] == "admin"
    # Appointing an owner is for organization admins.
    response = client.patch(f"/api/v1/members/{membership.pk}/", {"role": "owner"}, format="json")
    assert response.status_code == 403
    # Without a team the new person would vanish from alice's view: refused.
    response = client.post("/api/v1/users/", {"username": "floating"}, format="json")
    assert response.status_code == 400 and "team" in response.json()
    # Limits on people are for superusers.
    response = client.post("/api/v1/users/", {"username": "rich", "team": alpha.pk, "max_budget": "1"}, format="json")
    assert response.status_code == 403
    assert not User.objects.filter(username__in=["floating", "rich"]).exists()


def test_people_edit_only_themselves(alice, bob):
    assert client_for(alice).patch(f"/api/v1/users/{bob.pk}/", {"email": "x@evil"}, format="json").status_code in (
        400,
        403,
    )
    assert client_for(alice).patch(f"/api/v1/users/{bob.pk}/", {"first_name": "X"}, format="json").status_code == 403
    response = client_for(bob).patch(f"/api/v1/users/{bob.pk}/", {"first_name": "Bobby"}, format="json")
    assert response.status_code == 200
    assert client_for(bob).patch(f"/api/v1/users/{bob.pk}/", {"max_budget": "9"}, format="json").status_code == 403
    assert client_for(bob).patch(f"/api/v1/users/{bob.pk}/", {"is_superuser": True}, format="json").status_code == 400
    bob.refresh_from_db()
    assert bob.first_name == "Bobby" and not bob.is_superuser and bob.max_budget is None


def test_api_token_is_shown_once_stored_hashed_and_works(alpha, alice, charlie):
    response = client_for(alice).post("/api/v1/tokens/", {"name": "ci"}, format="json")
    assert response.status_code == 201
    secret = response.json()["token"]
    token = ApiToken.objects.get(pk=response.json()["id"])
    assert token.token_hash == keyed_hash(secret) and secret not in token.prefix
    assert secret not in client_for(alice).get("/api/v1/tokens/").content.decode()

    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    teams = bearer.get("/api/v1/teams/").json()["results"]
    assert [t["name"] for t in teams] == ["Alpha"]  # acts with alice's tenant rights
    token.refresh_from_db()
    assert token.last_used_at is not None

    # charlie neither sees nor deletes alice's token; alice deletes it and it stops working.
    assert client_for(charlie).delete(f"/api/v1/tokens/{token.pk}/").status_code == 404
    assert client_for(alice).delete(f"/api/v1/tokens/{token.pk}/").status_code == 204
    assert bearer.get("/api/v1/teams/").status_code == 401


def test_a_user_cannot_mint_tokens_for_someone_else(alpha, alice, bob):
    response = client_for(alice).post("/api/v1/tokens/", {"name": "for bob", "user": bob.pk}, format="json")
    assert response.status_code == 403
    assert not ApiToken.objects.filter(user=bob).exists()


def test_master_key_must_name_the_tokens_user(master, alice):
    assert master.post("/api/v1/tokens/", {"name": "x"}, format="json").status_code == 400
    response = master.post("/api/v1/tokens/", {"name": "x", "user": alice.pk}, format="json")
    assert response.status_code == 201 and ApiToken.objects.get().user == alice


def test_schema_and_docs_render(master, alice):
    response = client_for(alice).get("/api/schema/")
    assert response.status_code == 200
    text = response.content.decode()
    for path in ("/api/v1/keys/{id}/rotate/", "/api/v1/deployments/", "/api/v1/members/", "/api/v1/tokens/"):
        assert path in text
    assert client_for(alice).get("/api/docs/").status_code == 200


def test_org_admin_manages_customers_and_outsiders_cannot(acme, globex, olga, alice, charlie):
    client = client_for(olga)
    response = client.post(
        "/api/v1/customers/", {"organization": acme.pk, "external_id": "end-user-1", "max_budget": "2"}, format="json"
    )
    assert response.status_code == 201, response.content
    customer_id = response.json()["id"]
    response = client.patch(f"/api/v1/customers/{customer_id}/", {"blocked": True}, format="json")
    assert response.status_code == 200 and response.json()["blocked"] is True
    assert (
        client.post("/api/v1/customers/", {"organization": globex.pk, "external_id": "x"}, format="json").status_code
        == 400
    )
    # alice (team admin) reads her organization's customers but sets no limits on them; charlie sees nothing.
    assert client_for(alice).get(f"/api/v1/customers/{customer_id}/").status_code == 200
    assert (
        client_for(alice).patch(f"/api/v1/customers/{customer_id}/", {"blocked": False}, format="json").status_code
        == 403
    )
    assert client_for(charlie).get(f"/api/v1/customers/{customer_id}/").status_code == 404
    assert client_for(charlie).get("/api/v1/customers/").json()["results"] == []


def test_browsable_api_pages_render_for_the_cast(alpha, alice, bob, vera, charlie, root):
    from tests.factories import DeploymentFactory, VirtualKeyFactory

    key = VirtualKeyFactory(team=alpha, user=bob)
    deployment = DeploymentFactory(organization=alpha.organization)
    endpoints = ["organizations", "teams", "members", "users", "customers", "keys", "tokens", "deployments"]
    for user in (alice, bob, vera, charlie, root):
        client = client_for(user)
        assert client.get("/api/v1/", HTTP_ACCEPT="text/html").status_code == 200
        for name in endpoints:
            response = client.get(f"/api/v1/{name}/", HTTP_ACCEPT="text/html")
            assert response.status_code == 200, (user, name, response.status_code)
        for url in (f"/api/v1/keys/{key.pk}/", f"/api/v1/deployments/{deployment.pk}/"):
            assert client.get(url, HTTP_ACCEPT="text/html").status_code in (200, 404)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", ""])
def test_unknown_time_zones_are_refused(master, acme, zone):
    response = master.post("/api/v1/organizations/", {"name": "Tz", "time_zone": zone}, format="json")
    assert response.status_code == 400 and "time_zone" in response.json()
    response = master.patch(f"/api/v1/organizations/{acme.pk}/", {"time_zone": zone}, format="json")
    assert response.status_code == 400 and "time_zone" in response.json()
    acme.refresh_from_db()
    assert acme.time_zone == "UTC"
    assert (
        master.patch(f"/api/v1/organizations/{acme.pk}/", {"time_zone": "Europe/Berlin"}, format="json").status_code
        == 200
    )


def test_a_team_admin_cannot_remove_the_teams_owner(alpha, acme, alice, olga):
    owner = User.objects.create_user("owner")
    membership = Membership.objects.create(user=owner, organization=acme, team=alpha, role="owner")
    assert client_for(alice).delete(f"/api/v1/members/{membership.pk}/").status_code == 403
    assert Membership.objects.filter(pk=membership.pk).exists()
    assert client_for(olga).delete(f"/api/v1/members/{membership.pk}/").status_code == 204
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_team_admin_sets_the_budget_clamp_for_every_key_of_the_team(alpha, alice):
    response = client_for(alice).patch(f"/api/v1/teams/{alpha.pk}/", {"budget_clamp_max_tokens": True}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["budget_clamp_max_tokens"] is True
    alpha.refresh_from_db()
    assert alpha.budget_clamp_max_tokens is True
