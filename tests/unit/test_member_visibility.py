"""Rule: team members and viewers see their team, their organization's name and their own keys; of the
organization's models only names and prices (``GET /api/v1/models/``), never deployments or customers.

bob is an Alpha member, vera an Alpha viewer, alice Alpha's admin, charlie the outsider (Omega, Globex).
"""

import pytest
from django.test import Client

from tests.factories import CustomerFactory, DeploymentFactory
from tests.support.api import client_for

pytestmark = pytest.mark.django_db

UPSTREAM = "https://internal-llm.acme.example/v1"


@pytest.fixture
def acme_models(acme):
    private = DeploymentFactory(
        organization=acme,
        model_name="acme-private",
        api_base=UPSTREAM,
        extra={"deployment_id": "eu-west-secret-pool"},
        input_cost_per_token="0.000001",
        output_cost_per_token="0.000002",
    )
    pricier = DeploymentFactory(
        organization=acme,
        model_name="acme-private",
        api_base=UPSTREAM,
        input_cost_per_token="0.000003",
        output_cost_per_token="0.000004",
    )
    shared = DeploymentFactory(organization=None, model_name="shared-mini", api_base=UPSTREAM)
    customer = CustomerFactory(organization=acme, external_id="shop-42")
    return {"private": private, "pricier": pricier, "shared": shared, "customer": customer}


@pytest.mark.parametrize("who", ["bob", "vera"])
def test_members_and_viewers_read_no_deployment_or_customer(who, request, acme, acme_models):
    client = client_for(request.getfixturevalue(who))
    listing = client.get("/api/v1/deployments/")
    assert listing.status_code == 200 and listing.json()["results"] == []
    for deployment in ("private", "shared"):
        assert client.get(f"/api/v1/deployments/{acme_models[deployment].pk}/").status_code == 404
    assert client.get("/api/v1/customers/").json()["results"] == []
    assert client.get(f"/api/v1/customers/{acme_models['customer'].pk}/").status_code == 404
    assert client.get(f"/api/v1/organizations/{acme.pk}/").json()["name"] == "Acme"  # their organization's name


@pytest.mark.parametrize("who", ["bob", "vera"])
def test_members_and_viewers_get_no_deployment_or_customer_pages_in_the_admin(who, request, acme_models):
    browser = Client()
    browser.force_login(request.getfixturevalue(who))
    for url in ("/admin/proxy/modeldeployment/", "/admin/teams/customer/"):
        response = browser.get(url)
        assert response.status_code == 403, (url, response.status_code)
    assert UPSTREAM not in browser.get("/admin/").content.decode()


@pytest.mark.parametrize("who", ["bob", "vera", "alice"])
def test_everyone_in_a_team_reads_model_names_and_prices(who, request, acme_models):
    response = client_for(request.getfixturevalue(who)).get("/api/v1/models/")
    assert response.status_code == 200
    rows = {row["model_name"]: row for row in response.json()}
    assert set(rows) == {"acme-private", "shared-mini"}
    assert rows["acme-private"]["input_cost_per_token"] == "0.000003000000"  # the highest of the group
    assert rows["acme-private"]["output_cost_per_token"] == "0.000004000000"
    assert set(rows["acme-private"]) == {
        "model_name",
        "input_cost_per_token",
        "output_cost_per_token",
        "cached_input_cost_per_token",
    }
    assert UPSTREAM not in response.content.decode() and "eu-west" not in response.content.decode()


def test_an_outsider_reads_only_shared_model_names(charlie, acme_models):
    rows = client_for(charlie).get("/api/v1/models/").json()
    assert [row["model_name"] for row in rows] == ["shared-mini"]


def test_team_admins_still_read_their_organizations_deployments_and_customers(alice, acme_models):
    client = client_for(alice)
    listed = {row["id"] for row in client.get("/api/v1/deployments/").json()["results"]}
    assert listed == {acme_models[name].pk for name in ("private", "pricier", "shared")}
    assert client.get(f"/api/v1/customers/{acme_models['customer'].pk}/").status_code == 200
