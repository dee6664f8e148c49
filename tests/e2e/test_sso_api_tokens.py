"""The REST API accepts the OpenID provider's JWT access tokens (a CI pipeline's client credentials).

The provider is the real one (tests/e2e/js/oidc_provider.mjs): its token endpoint issues RS256 JWT access
tokens for the API audience, signed with a key the gateway learns from the JWKS found through discovery.
The service account ``ci-deployer`` carries the group ``globex-deployers`` (rule: admin of Omega);
``ci-reporter`` is matched by a "client" rule on its client id (viewer of Acme). The last tests point
the gateway at the same provider under another issuer name, and at no provider at all.
"""

from __future__ import annotations

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from apps.sso import authentication
from apps.sso.client import oidc_client
from apps.sso.models import GroupMapping, SsoIdentity
from apps.teams.models import AuditEvent, Membership
from tests.factories import OrganizationFactory, TeamFactory
from tests.support.oidc import OidcProvider
from tests.support.processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

SERVICE_CLIENTS = [
    {"client_id": name, "client_secret": f"{name}-secret-0123456789", "grant_types": ["client_credentials"]}
    for name in ("ci-deployer", "ci-reporter", "ci-nobody")
]
for client in SERVICE_CLIENTS:
    client.update(redirect_uris=[], response_types=[])


@pytest.fixture(scope="module")
def provider():
    groups = {"ci-deployer": ["globex-deployers"], "ci-nobody": ["unmapped"]}
    with OidcProvider(clients=SERVICE_CLIENTS, accounts={}, client_groups=groups) as server:
        yield server


@pytest.fixture
def sso_api(provider):
    with override_settings(
        OIDC_ISSUER=provider.issuer, OIDC_CLIENT_ID="gateway", OIDC_API_AUDIENCE=provider.api_audience
    ):
        authentication._jwks.cache_clear()
        yield provider
    authentication._jwks.cache_clear()


@pytest.fixture
def tenants():
    acme = OrganizationFactory(name="Acme")
    alpha = TeamFactory(organization=acme, name="Alpha")
    globex = OrganizationFactory(name="Globex")
    omega = TeamFactory(organization=globex, name="Omega")
    GroupMapping.objects.create(value="globex-deployers", organization=globex, team=omega, role="admin")
    GroupMapping.objects.create(kind="client", value="ci-reporter", organization=acme, role="viewer")
    return {"acme": acme, "alpha": alpha, "omega": omega}


def _bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _token(provider, name: str, **kwargs) -> str:
    return provider.client_credentials(name, f"{name}-secret-0123456789", **kwargs)


def test_a_pipeline_provisions_a_key_in_its_team_with_a_client_credentials_token(sso_api, tenants):
    api = _bearer(_token(sso_api, "ci-deployer"))
    teams = api.get("/api/v1/teams/")
    assert teams.status_code == 200, teams.content
    assert [team["name"] for team in teams.json()["results"]] == ["Omega"]
    created = api.post("/api/v1/keys/", {"team": tenants["omega"].pk, "alias": "deploy-bot"}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["key"].startswith("sk-")
    # Acting as its own service-account user, placed by the rule and audited as single sign-on's doing.
    identity = SsoIdentity.objects.get(subject="ci-deployer")
    assert identity.client_id == "ci-deployer" and identity.groups == ["globex-deployers"]
    assert Membership.objects.get(user=identity.user).role == "admin"
    assert AuditEvent.objects.filter(action="membership.create", source="sso").exists()
    refused = api.post("/api/v1/keys/", {"team": tenants["alpha"].pk, "alias": "elsewhere"}, format="json")
    assert refused.status_code in (400, 403)


def test_a_client_rule_places_a_service_account_by_its_client_id(sso_api, tenants):
    api = _bearer(_token(sso_api, "ci-reporter"))
    teams = api.get("/api/v1/teams/")
    assert teams.status_code == 200
    assert [team["name"] for team in teams.json()["results"]] == ["Alpha"]
    # A viewer: the team is not one it may create keys in.
    refused = api.post("/api/v1/keys/", {"team": tenants["alpha"].pk, "alias": "viewer-key"}, format="json")
    assert refused.status_code in (400, 403) and "key" not in refused.json()


def test_a_token_for_another_audience_is_refused(sso_api, tenants):
    token = _token(sso_api, "ci-deployer", resource="https://another-service.example/")
    answer = _bearer(token).get("/api/v1/teams/")
    assert answer.status_code == 401 and answer.json()["detail"] == "Invalid token."


def test_a_token_no_rule_grants_anything_is_forbidden(sso_api, tenants):
    answer = _bearer(_token(sso_api, "ci-nobody")).get("/api/v1/teams/")
    assert answer.status_code == 403


def test_a_tampered_or_foreign_jwt_is_refused_and_api_tokens_still_work(sso_api, tenants):
    token = _token(sso_api, "ci-deployer")
    header, payload, signature = token.split(".")
    forged = ".".join([header, payload, signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")])
    assert _bearer(forged).get("/api/v1/teams/").status_code == 401
    # "alg": "none", and a key id the provider never published (one JWKS refetch, then refused).
    unsigned = "eyJhbGciOiJub25lIiwia2lkIjoibm9wZSJ9." + payload + "."
    assert _bearer(unsigned).get("/api/v1/teams/").status_code == 401
    assert _bearer("eyJ.not.a-jwt").get("/api/v1/teams/").status_code == 401
    # Anything not shaped like a JWT is left to the other authentications (an unknown API token: 401 too).
    assert _bearer("not-a-jwt-token").get("/api/v1/teams/").status_code == 401


def test_without_an_api_audience_jwts_are_not_accepted(sso_api, tenants):
    token = _token(sso_api, "ci-deployer")
    with override_settings(OIDC_API_AUDIENCE=""):
        assert _bearer(token).get("/api/v1/teams/").status_code == 401


def test_a_provider_that_names_another_issuer_is_refused(client, provider, tenants):
    """The same provider reached under another name: its discovery document (and tokens) name a different
    issuer than the configured one, so neither the admin sign-in nor its API tokens are accepted."""
    token = _token(provider, "ci-deployer")
    other_name = provider.issuer.replace("127.0.0.1", "localhost")
    with override_settings(OIDC_ISSUER=other_name, OIDC_CLIENT_ID="gateway", OIDC_API_AUDIENCE=provider.api_audience):
        oidc_client.cache_clear()
        authentication._jwks.cache_clear()
        try:
            answer = client.get("/admin/sso/login/")
            assert answer.status_code == 503 and b"issuer" in answer.content
            assert _bearer(token).get("/api/v1/teams/").status_code == 401
        finally:
            oidc_client.cache_clear()
            authentication._jwks.cache_clear()


def test_an_unreachable_provider_is_a_503_not_a_500(client, tenants):
    with override_settings(OIDC_ISSUER=f"http://127.0.0.1:{free_port()}", OIDC_CLIENT_ID="gateway"):
        oidc_client.cache_clear()
        try:
            answer = client.get("/admin/sso/login/")
            assert answer.status_code == 503 and b"could not be read" in answer.content
        finally:
            oidc_client.cache_clear()
