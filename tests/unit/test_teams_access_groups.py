"""Model access groups as data: who manages them (API, admin), and what a key's context resolves them to.

The context is what the proxy builds on an auth-cache miss (``load_key_context``); its ``allowed_models``
is the frozen set of concrete names every /v1 check reads.
"""

from __future__ import annotations

import pytest
from django.test import Client

from apps.keys.hashing import keyed_hash
from apps.proxy.auth import load_key_context
from apps.teams.access import access_groups_for
from apps.teams.models import AuditEvent, ModelAccessGroup
from tests.factories import DeploymentFactory, VirtualKeyFactory
from tests.support.api import client_for

pytestmark = pytest.mark.django_db

API = "/api/v1/access-groups/"


def context_models(key) -> frozenset[str] | None:
    ctx = load_key_context(keyed_hash(key.secret))
    assert ctx is not None
    return ctx.allowed_models


@pytest.fixture
def catalog(acme, globex):
    """Shared gpt-4o (OpenAI and Azure), gpt-4o-mini (OpenAI), claude-3-haiku (Anthropic); private names."""
    DeploymentFactory(model_name="gpt-4o", provider="openai")
    DeploymentFactory(model_name="gpt-4o", provider="azure")
    DeploymentFactory(model_name="gpt-4o-mini", provider="openai")
    DeploymentFactory(model_name="claude-3-haiku", provider="anthropic")
    DeploymentFactory(model_name="claude-off", provider="anthropic", enabled=False)
    DeploymentFactory(model_name="claude-acme", provider="anthropic", organization=acme)
    DeploymentFactory(model_name="claude-globex", provider="anthropic", organization=globex)


def test_a_key_naming_a_group_gets_its_members(catalog, alpha):
    ModelAccessGroup.objects.create(name="gpt-4-family", members=["gpt-4o", "gpt-4o-mini"])
    key = VirtualKeyFactory(team=alpha, allowed_models=["gpt-4-family"])
    assert context_models(key) == {"gpt-4o", "gpt-4o-mini"}


def test_patterns_match_the_names_the_organization_can_call(catalog, alpha):
    key = VirtualKeyFactory(team=alpha, allowed_models=["claude-*"])
    # Its own private claude, the shared one; never a disabled one or another organization's.
    assert context_models(key) == {"claude-3-haiku", "claude-acme"}
    key = VirtualKeyFactory(team=alpha, allowed_models=["azure/*"])
    assert context_models(key) == {"gpt-4o"}


def test_an_organizations_own_group_shadows_a_shared_one(catalog, acme, alpha, omega):
    ModelAccessGroup.objects.create(name="cheap", members=["gpt-4o-mini"])
    ModelAccessGroup.objects.create(name="cheap", members=["claude-3-haiku"], organization=acme)
    assert context_models(VirtualKeyFactory(team=alpha, allowed_models=["cheap"])) == {"claude-3-haiku"}
    assert context_models(VirtualKeyFactory(team=omega, allowed_models=["cheap"])) == {"gpt-4o-mini"}
    assert access_groups_for(acme.pk)["cheap"] == ("claude-3-haiku",)


def test_team_and_organization_groups_bound_the_key(catalog, acme, alpha):
    ModelAccessGroup.objects.create(name="openai-models", members=["openai/*"], organization=acme)
    acme.allowed_models = ["openai-models"]
    acme.save()
    alpha.allowed_models = ["gpt-4o-mini", "claude-3-haiku"]
    alpha.save()
    assert context_models(VirtualKeyFactory(team=alpha)) == {"gpt-4o-mini"}
    assert context_models(VirtualKeyFactory(team=alpha, allowed_models=["*"])) == {"gpt-4o-mini"}


# --- the REST API ---------------------------------------------------------------------------------------
def test_an_org_admin_manages_their_organizations_groups(acme, olga):
    api = client_for(olga)
    created = api.post(API, {"organization": acme.pk, "name": "fast", "models": ["gpt-4o-mini"]}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["models"] == ["gpt-4o-mini"] and created.json()["organization"] == acme.pk
    group_url = f"{API}{created.json()['id']}/"
    changed = api.patch(group_url, {"models": ["gpt-4o-mini", "claude-*"]}, format="json")
    assert changed.status_code == 200 and changed.json()["models"] == ["gpt-4o-mini", "claude-*"]
    assert AuditEvent.objects.filter(action="access_group.update", organization=acme).exists()
    assert api.delete(group_url).status_code == 204
    assert not ModelAccessGroup.objects.exists()


def test_shared_groups_are_the_operators(acme, olga, master):
    refused = client_for(olga).post(API, {"name": "everyone", "models": ["gpt-4o"]}, format="json")
    assert refused.status_code == 403
    assert master.post(API, {"name": "everyone", "models": ["gpt-4o"]}, format="json").status_code == 201
    shared = ModelAccessGroup.objects.get(name="everyone")
    assert client_for(olga).patch(f"{API}{shared.pk}/", {"models": []}, format="json").status_code == 403


def test_charlie_cant_see_or_change_acmes_groups(acme, globex, charlie):
    group = ModelAccessGroup.objects.create(name="acme-only", members=["gpt-4o"], organization=acme)
    api = client_for(charlie)
    assert group.pk not in [g["id"] for g in api.get(API).json()["results"]]
    assert api.patch(f"{API}{group.pk}/", {"models": ["*"]}, format="json").status_code == 404
    created = api.post(API, {"organization": acme.pk, "name": "sneaky", "models": ["*"]}, format="json")
    assert created.status_code == 400  # acme is not an organization charlie may pick


def test_bad_groups_are_a_400_naming_the_field(acme, olga):
    api = client_for(olga)
    for body, field in (
        ({"organization": acme.pk, "name": "gpt-*", "models": ["a"]}, "name"),
        ({"organization": acme.pk, "name": "two words", "models": ["a"]}, "name"),
        ({"organization": acme.pk, "name": "ok", "models": "gpt-4o"}, "models"),
        ({"organization": acme.pk, "name": "ok", "models": ["a"], "extra": 1}, "extra"),
    ):
        response = api.post(API, body, format="json")
        assert response.status_code == 400 and field in response.json(), (body, response.content)
    api.post(API, {"organization": acme.pk, "name": "dup", "models": ["a"]}, format="json")
    again = api.post(API, {"organization": acme.pk, "name": "dup", "models": ["b"]}, format="json")
    assert again.status_code == 400 and "name" in again.json()


def test_a_key_may_name_a_model_of_its_teams_group(acme, alpha, alice):
    ModelAccessGroup.objects.create(name="gpt-4-family", members=["gpt-4o", "gpt-4o-mini"], organization=acme)
    alpha.allowed_models = ["gpt-4-family"]
    alpha.save()
    api = client_for(alice)
    ok = api.post("/api/v1/keys/", {"team": alpha.pk, "alias": "k1", "models": ["gpt-4o"]}, format="json")
    assert ok.status_code == 201, ok.content
    ok = api.post("/api/v1/keys/", {"team": alpha.pk, "alias": "k2", "models": ["gpt-4-family"]}, format="json")
    assert ok.status_code == 201, ok.content
    refused = api.post("/api/v1/keys/", {"team": alpha.pk, "alias": "k3", "models": ["claude-3"]}, format="json")
    assert refused.status_code == 400 and "claude-3" in str(refused.json()["models"])


def test_key_info_lists_the_resolved_names(catalog, alpha):
    ModelAccessGroup.objects.create(name="gpt-4-family", members=["gpt-4o*"])
    key = VirtualKeyFactory(team=alpha, allowed_models=["gpt-4-family"])
    info = Client().get("/v1/key/info", headers={"Authorization": f"Bearer {key.secret}"})
    assert info.status_code == 200 and info.json()["models"] == ["gpt-4o", "gpt-4o-mini"]


# --- the admin ------------------------------------------------------------------------------------------
def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_admin_edits_groups_within_the_tenant(acme, globex, olga, charlie):
    olga.is_staff = True
    olga.save()
    page = browser(olga)
    form = {"organization": acme.pk, "name": "fast", "members": "gpt-4o-mini, claude-*", "description": ""}
    response = page.post("/admin/teams/modelaccessgroup/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    group = ModelAccessGroup.objects.get(name="fast")
    assert group.members == ["gpt-4o-mini", "claude-*"] and group.organization == acme
    change = f"/admin/teams/modelaccessgroup/{group.pk}/change/"
    assert page.post(change, {"name": "fast", "members": "gpt-4o", "description": ""}).status_code == 302
    group.refresh_from_db()
    assert group.members == ["gpt-4o"]
    # Shared groups are not an org admin's to make: the service's refusal lands on the form.
    shared = page.post("/admin/teams/modelaccessgroup/add/", {**form, "organization": "", "name": "shared"})
    assert shared.status_code == 200 and not ModelAccessGroup.objects.filter(name="shared").exists()
    charlie.is_staff = True
    charlie.save()
    assert browser(charlie).get(change).status_code in (302, 403, 404)
    assert "fast" not in browser(charlie).get("/admin/teams/modelaccessgroup/").content.decode()
