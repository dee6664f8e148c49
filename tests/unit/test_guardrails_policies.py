"""Guardrail policies as people edit them: the admin, the REST API and the config file refuse a bad policy
(400 / a form error / a file error) and store a good one; tenants only reach their own; the key context
carries the merged policy."""

from __future__ import annotations

import io

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.test import Client

from apps.guardrails.models import GuardrailPolicy
from apps.guardrails.selectors import policy_for_key
from apps.proxy.auth import load_key_context
from tests.factories import VirtualKeyFactory
from tests.support.api import client_for

pytestmark = pytest.mark.django_db

GOOD = {"pii": {"entities": {"email": "mask", "payment_card": "block"}}, "max_input_chars": 1000}
BAD = {"pii": {"entities": {"fax": "mask"}}, "moderation": {"model": "m", "on_error": "sometimes"}}


def test_rest_api_refuses_a_bad_policy_with_400_and_stores_a_good_one(master, acme, alpha):
    response = master.post("/api/v1/guardrails/", {"team": alpha.pk, "config": BAD}, format="json")
    assert response.status_code == 400
    errors = response.json()["config"]
    assert any("pii.entities.fax" in e for e in errors) and any("moderation.on_error" in e for e in errors)
    assert not GuardrailPolicy.objects.exists()
    response = master.post("/api/v1/guardrails/", {"team": alpha.pk, "config": GOOD}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["scope"] == "team" and body["organization"] == acme.pk and body["config"] == GOOD
    patched = master.patch(f"/api/v1/guardrails/{body['id']}/", {"config": {"max_input_chars": 0}}, format="json")
    assert patched.status_code == 400
    assert master.patch(f"/api/v1/guardrails/{body['id']}/", {"config": {}}, format="json").status_code == 200
    assert master.delete(f"/api/v1/guardrails/{body['id']}/").status_code == 204


def test_tenants_only_reach_their_own_policies(acme, alpha, omega, alice, bob, charlie):
    mine = GuardrailPolicy.objects.create(organization=acme, team=alpha, config=GOOD)
    theirs = GuardrailPolicy.objects.create(organization=omega.organization, team=omega, config=GOOD)
    listed = {p["id"] for p in client_for(alice).get("/api/v1/guardrails/").json()["results"]}
    assert mine.pk in listed and theirs.pk not in listed
    # charlie (Globex) can't see Alpha's policy nor set one on Alpha; bob, a member, may not change it.
    assert client_for(charlie).get(f"/api/v1/guardrails/{mine.pk}/").status_code == 404
    refused = client_for(charlie).post("/api/v1/guardrails/", {"team": alpha.pk, "config": {}}, format="json")
    assert refused.status_code == 400  # Alpha is not a team charlie can name
    bobs = client_for(bob).patch(f"/api/v1/guardrails/{mine.pk}/", {"config": {}}, format="json")
    assert bobs.status_code in (403, 404)
    assert GuardrailPolicy.objects.get(pk=mine.pk).config == GOOD


def test_admin_form_refuses_a_bad_policy(alice, alpha):
    client = Client()
    client.force_login(alice)
    form = {"organization": alpha.organization_id, "team": alpha.pk, "key": "", "config": '{"deny": {"keywords": []}}'}
    response = client.post("/admin/guardrails/guardrailpolicy/add/", form)
    assert response.status_code == 200 and "deny" in response.content.decode()  # the form again, with the error
    assert not GuardrailPolicy.objects.exists()
    form["config"] = '{"deny": {"keywords": ["falcon"]}}'
    assert client.post("/admin/guardrails/guardrailpolicy/add/", form).status_code == 302
    assert GuardrailPolicy.objects.get(team=alpha).config == {"deny": {"keywords": ["falcon"]}}


def test_key_context_carries_the_merged_policy(acme, alpha):
    key = VirtualKeyFactory(team=alpha)
    GuardrailPolicy.objects.create(organization=acme, config={"max_input_chars": 10, "deny": {"keywords": ["x"]}})
    GuardrailPolicy.objects.create(organization=acme, team=alpha, config={"max_input_chars": 20})
    GuardrailPolicy.objects.create(organization=acme, team=alpha, key=key, config={"deny": None})
    context = load_key_context(key.key_hash)
    assert context.guardrails.max_input_chars == 20 and context.guardrails.deny is None
    other = VirtualKeyFactory(team=alpha)
    assert policy_for_key(key_id=other.pk, team_id=alpha.pk, organization_id=acme.pk).deny is not None


def test_no_policy_means_no_guardrails_on_the_context(alpha):
    key = VirtualKeyFactory(team=alpha)
    assert load_key_context(key.key_hash).guardrails is None


CONFIG = """\
version: 1
organizations:
  - name: Initech
    guardrails:
      pii: {entities: {email: mask}}
    teams:
      - name: search
        guardrails:
          deny: {keywords: [falcon]}
          max_input_chars: 5000
"""


def run(command: str, *args: str) -> str:
    out = io.StringIO()
    call_command(command, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_config_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    output = run("gateway_apply", str(path))
    assert "guardrails Initech/search" in output
    team_policy = GuardrailPolicy.objects.get(team__name="search")
    assert team_policy.config == {"deny": {"keywords": ["falcon"]}, "max_input_chars": 5000}
    exported = yaml.safe_load(run("gateway_export"))
    org = next(o for o in exported["organizations"] if o["name"] == "Initech")
    assert org["guardrails"] == {"pii": {"entities": {"email": "mask"}}}
    assert org["teams"][0]["guardrails"] == team_policy.config
    path.write_text(yaml.safe_dump(exported))
    assert "no changes" in run("gateway_apply", str(path))
    # Left out of the file: the team's policy goes (declarative), the organization's stays.
    path.write_text(
        CONFIG.replace(
            "        guardrails:\n          deny: {keywords: [falcon]}\n          max_input_chars: 5000\n", ""
        )
    )
    run("gateway_apply", str(path))
    assert not GuardrailPolicy.objects.filter(team__name="search").exists()
    path.write_text(CONFIG.replace("email: mask", "email: hide"))
    with pytest.raises(CommandError) as caught:
        run("gateway_apply", str(path))
    assert "gateway.yaml:4: organizations[0].guardrails: pii.entities.email: action must be one of" in str(caught.value)
