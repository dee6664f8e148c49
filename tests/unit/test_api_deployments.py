"""Deployments over the API: credentials are write-only and encrypted; unsafe upstreams are refused."""

import pytest

from apps.proxy.models import ModelDeployment
from apps.teams.models import AuditEvent
from tests.factories import DeploymentFactory
from tests.support.api import client_for

pytestmark = pytest.mark.django_db

SECRET = "sk-upstream-THIS-MUST-NEVER-LEAK-123"


def payload(**overrides) -> dict:
    return {
        "model_name": "gpt-4o",
        "provider": "openai",
        "model": "gpt-4o-2024-08-06",
        "api_base": "https://api.example.com/v1",
        "api_key": SECRET,
        "rpm_limit": 500,
        "tpm_limit": 100000,
        "input_cost_per_token": "0.0000025",
        "output_cost_per_token": "0.00001",
        **overrides,
    }


def test_api_key_goes_in_and_never_comes_out(master):
    response = master.post("/api/v1/deployments/", payload(), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert "api_key" not in body and body["credentials"] == "set"
    assert SECRET not in response.content.decode()
    deployment = ModelDeployment.objects.get(pk=body["id"])
    assert SECRET not in deployment.credentials_encrypted  # encrypted at rest
    assert deployment.get_credentials() == SECRET
    for url in ("/api/v1/deployments/", f"/api/v1/deployments/{deployment.pk}/", "/api/schema/"):
        assert SECRET not in master.get(url).content.decode()
    assert not any(SECRET in str(event.changes) for event in AuditEvent.objects.all())


def test_patch_keeps_replaces_or_clears_the_key(master):
    deployment_id = master.post("/api/v1/deployments/", payload(), format="json").json()["id"]
    url = f"/api/v1/deployments/{deployment_id}/"
    assert master.patch(url, {"rpm_limit": 10}, format="json").json()["credentials"] == "set"
    assert ModelDeployment.objects.get(pk=deployment_id).get_credentials() == SECRET
    master.patch(url, {"api_key": "sk-new"}, format="json")
    assert ModelDeployment.objects.get(pk=deployment_id).get_credentials() == "sk-new"
    assert master.patch(url, {"api_key": ""}, format="json").json()["credentials"] == "not set"


@pytest.mark.parametrize(
    "api_base",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fd00:ec2::254]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]/",
        "file:///etc/passwd",
        "http://user:pass@api.example.com/",
        "not a url",
    ],
)
def test_unsafe_upstreams_are_refused(master, api_base):
    response = master.post("/api/v1/deployments/", payload(api_base=api_base), format="json")
    assert response.status_code == 400
    assert "api_base" in response.json()
    assert not ModelDeployment.objects.exists()


def test_private_upstreams_follow_the_setting(master, settings):
    settings.PROXY_ALLOW_PRIVATE_UPSTREAMS = True
    assert (
        master.post("/api/v1/deployments/", payload(api_base="http://127.0.0.1:8000/v1"), format="json").status_code
        == 201
    )
    settings.PROXY_ALLOW_PRIVATE_UPSTREAMS = False
    response = master.post("/api/v1/deployments/", payload(api_base="http://10.0.0.5/v1"), format="json")
    assert response.status_code == 400 and "api_base" in response.json()


def test_tenants_manage_only_their_own_deployments(acme, globex, olga, alice, charlie):
    shared = DeploymentFactory()
    acmes = DeploymentFactory(organization=acme, model_name="acme-private")
    globexs = DeploymentFactory(organization=globex, model_name="globex-private")
    olgas = client_for(olga)
    names = {row["model_name"] for row in olgas.get("/api/v1/deployments/").json()["results"]}
    assert "globex-private" not in names and "acme-private" in names
    assert olgas.get(f"/api/v1/deployments/{globexs.pk}/").status_code == 404
    assert olgas.patch(f"/api/v1/deployments/{acmes.pk}/", {"rpm_limit": 5}, format="json").status_code == 200
    # Shared deployments are readable but belong to superusers.
    assert olgas.patch(f"/api/v1/deployments/{shared.pk}/", {"rpm_limit": 5}, format="json").status_code == 403
    assert olgas.post("/api/v1/deployments/", payload(), format="json").status_code == 403
    assert olgas.post("/api/v1/deployments/", payload(organization=acme.pk), format="json").status_code == 201
    assert olgas.post("/api/v1/deployments/", payload(organization=globex.pk), format="json").status_code == 400
    # A team admin reads the org's deployments but changes none.
    assert (
        client_for(alice).patch(f"/api/v1/deployments/{acmes.pk}/", {"enabled": False}, format="json").status_code
        == 403
    )
    assert client_for(charlie).delete(f"/api/v1/deployments/{acmes.pk}/").status_code == 404
    assert client_for(olga).delete(f"/api/v1/deployments/{acmes.pk}/").status_code == 204
    assert not ModelDeployment.objects.filter(pk=acmes.pk).exists()


@pytest.mark.parametrize("field", ["model", "model_name", "api_version", "region"])
@pytest.mark.parametrize("bad", ["gpt-4o\r\nx-injected: 1", "gpt\n4o", "gpt\x7f4o", "gpt\x854o"])
def test_control_characters_in_header_fields_are_a_400(master, field, bad):
    """These fields end up in the x-gateway-deployment header: a CR/LF there closes every answer unanswered."""
    response = master.post("/api/v1/deployments/", payload(**{field: bad}), format="json")
    assert response.status_code == 400, response.content
    assert field in response.json() and "control characters" in str(response.json()[field])
    assert not ModelDeployment.objects.exists()


def test_control_characters_are_refused_on_update_too(master):
    deployment_id = master.post("/api/v1/deployments/", payload(), format="json").json()["id"]
    response = master.patch(f"/api/v1/deployments/{deployment_id}/", {"model": "a\r\nb"}, format="json")
    assert response.status_code == 400 and "model" in response.json()
    assert ModelDeployment.objects.get(pk=deployment_id).model == "gpt-4o-2024-08-06"


def test_the_registry_skips_rows_with_control_characters(caplog):
    from apps.proxy.registry import load_registry

    DeploymentFactory(model_name="clean", model="up")
    bad = DeploymentFactory(model_name="dirty", model="up\r\nx-injected: 1")
    registry = load_registry()
    assert "clean" in registry.groups and "dirty" not in registry.groups
    assert f"deployment {bad.pk} skipped: control characters in model" in caplog.text
