"""gateway_apply / gateway_export: a YAML file made true through the admin's own services, and back.

Runs the real management commands against the suite's Postgres; what a platform engineer sees is the
command's output, its error lines, and the rows (and audit rows) it leaves.
"""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from apps.keys.models import VirtualKey
from apps.proxy.models import ModelAlias, ModelDeployment, ModelGroup
from apps.teams.models import AuditEvent, Customer, Membership, ModelAccessGroup, Organization, Team, User
from tests.factories import VirtualKeyFactory

pytestmark = pytest.mark.django_db

ENV = {"OPENAI_KEY": "sk-upstream-from-env-1", "AZURE_KEY": "azure-secret-from-env"}

CONFIG = """\
version: 1
users:
  - username: dora
    email: dora@example.com
  - username: eve
organizations:
  - name: Initech
    time_zone: Europe/Berlin
    max_budget: 500
    budget_duration: 1mo
    members:
      - {user: dora, role: owner}
    teams:
      - name: search
        rpm_limit: 100
        tpm_limit: 200000
        max_budget: 50.5
        budget_duration: 1d
        allowed_models: [gpt-4o]
        members:
          - {user: eve, role: member}
      - name: billing
    customers:
      - external_id: cust-1
        max_budget: 2
        budget_duration: 1d
    deployments:
      - name: initech-azure
        model_name: gpt-4o
        provider: azure
        model: gpt-4o-prod
        api_base: https://initech.openai.azure.com
        api_version: 2024-06-01
        api_key: os.environ/AZURE_KEY
deployments:
  - name: openai-gpt-4o
    model_name: gpt-4o
    provider: openai
    model: gpt-4o
    api_key: os.environ/OPENAI_KEY
    input_cost_per_token: 0.0000025
    output_cost_per_token: 0.00001
    rpm_limit: 500
    extra: {cooldown_seconds: 30}
model_groups:
  - model_name: gpt-4o
    strategy: least-busy
    fallbacks: [gpt-4o-mini]
    num_retries: 2
aliases:
  gpt-4: gpt-4o
"""


@pytest.fixture
def env(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def apply(path: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("gateway_apply", str(path), *args, stdout=out)
    return out.getvalue()


def apply_error(path: Path, *args: str) -> str:
    with pytest.raises(CommandError) as caught:
        apply(path, *args)
    return str(caught.value)


def export(*args: str) -> str:
    out = io.StringIO()
    call_command("gateway_export", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_apply_creates_everything_the_file_names(tmp_path, env):
    output = apply(write(tmp_path, CONFIG))

    org = Organization.objects.get(name="Initech")
    assert org.time_zone == "Europe/Berlin" and org.max_budget == Decimal(500) and org.budget_duration == "1mo"
    search = Team.objects.get(organization=org, name="search")
    assert (search.rpm_limit, search.tpm_limit, search.max_budget) == (100, 200000, Decimal("50.5"))
    assert search.allowed_models == ["gpt-4o"]
    assert Team.objects.filter(organization=org, name="billing").exists()
    assert Membership.objects.get(user__username="dora", organization=org, team=None).role == "owner"
    assert Membership.objects.get(user__username="eve", team=search).role == "member"
    assert Customer.objects.get(organization=org, external_id="cust-1").max_budget == Decimal(2)
    shared = ModelDeployment.objects.get(name="openai-gpt-4o", organization=None)
    assert shared.get_credentials() == "sk-upstream-from-env-1"
    assert shared.credentials_ref == "os.environ/OPENAI_KEY"
    assert shared.input_cost_per_token == Decimal("0.0000025") and shared.extra == {"cooldown_seconds": 30}
    azure = ModelDeployment.objects.get(name="initech-azure", organization=org)
    assert azure.get_credentials() == "azure-secret-from-env" and azure.api_version == "2024-06-01"
    group = ModelGroup.objects.get(model_name="gpt-4o")
    assert (group.strategy, group.fallbacks, group.num_retries) == ("least-busy", ["gpt-4o-mini"], 2)
    assert ModelAlias.objects.get(alias="gpt-4").model_name == "gpt-4o"
    assert "+ team Initech/search" in output and "+ deployment shared/openai-gpt-4o" in output
    # The diff names the reference, never the secret behind it.
    assert "api_key: os.environ/OPENAI_KEY" in output and "sk-upstream-from-env-1" not in output


def test_a_second_apply_changes_nothing(tmp_path, env):
    path = write(tmp_path, CONFIG)
    apply(path)
    audit_rows = AuditEvent.objects.count()

    assert apply(path).strip() == "no changes"
    assert AuditEvent.objects.count() == audit_rows


def test_dry_run_prints_the_diff_and_writes_nothing(tmp_path, env):
    path = write(tmp_path, CONFIG)
    output = apply(path, "--dry-run")

    assert "+ organization Initech" in output and "dry run, nothing written" in output
    assert not Organization.objects.filter(name="Initech").exists()
    assert not ModelDeployment.objects.exists() and not User.objects.filter(username="dora").exists()
    assert not AuditEvent.objects.exists()

    apply(path)
    changed = write(tmp_path, CONFIG.replace("rpm_limit: 100", "rpm_limit: 120"), "changed.yaml")
    output = apply(changed, "--dry-run")
    assert "~ team Initech/search" in output and "rpm_limit: 100 -> 120" in output
    assert Team.objects.get(name="search").rpm_limit == 100


def test_a_changed_line_is_applied_and_audited_as_a_config_change(tmp_path, env):
    apply(write(tmp_path, CONFIG))
    changed = CONFIG.replace("rpm_limit: 100", "rpm_limit: 120").replace("gpt-4: gpt-4o", "gpt-4: gpt-4o-mini")
    output = apply(write(tmp_path, changed, "changed.yaml"))

    assert Team.objects.get(name="search").rpm_limit == 120
    assert ModelAlias.objects.get(alias="gpt-4").model_name == "gpt-4o-mini"
    assert sum(line.startswith("~ ") for line in output.splitlines()) == 2
    event = AuditEvent.objects.filter(action="team.update").latest("created_at")
    assert event.changes == {"rpm_limit": 120} and event.source == "config"
    assert event.organization.name == "Initech" and event.actor_label == "config file (manage.py)"


def test_every_created_object_has_its_audit_row(tmp_path, env):
    apply(write(tmp_path, CONFIG))

    actions = set(AuditEvent.objects.filter(source="config").values_list("action", flat=True))
    assert {
        "user.create",
        "organization.create",
        "team.create",
        "membership.create",
        "customer.upsert",
        "deployment.create",
        "modelgroup.create",
        "modelalias.create",
    } <= actions
    created = AuditEvent.objects.get(action="deployment.create", object_repr__startswith="gpt-4o -> openai")
    assert created.changes["api_key"] == "***"  # the audit never holds the key


def test_removing_a_line_resets_that_field_to_its_default(tmp_path, env):
    apply(write(tmp_path, CONFIG))
    apply(write(tmp_path, CONFIG.replace("        tpm_limit: 200000\n", ""), "less.yaml"))

    assert Team.objects.get(name="search").tpm_limit is None


def test_prune_removes_what_the_file_no_longer_names_within_its_organizations(tmp_path, env, globex):
    apply(write(tmp_path, CONFIG))
    Organization.objects.get(name="Initech")
    smaller = (
        CONFIG.replace("      - name: billing\n", "")
        .replace(
            "    customers:\n      - external_id: cust-1\n        max_budget: 2\n        budget_duration: 1d\n", ""
        )
        .replace("        members:\n          - {user: eve, role: member}\n", "")
        .replace("aliases:\n  gpt-4: gpt-4o\n", "aliases: {}\n")
    )
    path = write(tmp_path, smaller, "smaller.yaml")

    assert "no changes" in apply(path)  # without --prune nothing goes
    assert Team.objects.filter(name="billing").exists()

    output = apply(path, "--prune")
    assert "- team Initech/billing" in output and "- customer Initech/cust-1" in output
    assert not Team.objects.filter(name="billing").exists()
    assert not Customer.objects.filter(external_id="cust-1").exists()
    assert not Membership.objects.filter(user__username="eve").exists()
    assert not ModelAlias.objects.exists()
    assert User.objects.filter(username="eve").exists()  # people are never pruned
    assert Organization.objects.filter(pk=globex.pk).exists()  # an organization the file does not name
    assert apply(path, "--prune").strip() == "no changes"


def test_prune_blocks_a_team_with_keys_instead_of_deleting_it(tmp_path, env):
    apply(write(tmp_path, CONFIG))
    key = VirtualKeyFactory(team=Team.objects.get(name="billing"))
    path = write(tmp_path, CONFIG.replace("      - name: billing\n", ""), "smaller.yaml")

    output = apply(path, "--prune")

    assert "blocked: False -> True" in output
    assert Team.objects.get(name="billing").blocked and VirtualKey.objects.filter(pk=key.pk).exists()
    assert apply(path, "--prune").strip() == "no changes"


def test_prune_leaves_shared_sections_the_file_does_not_have(tmp_path, env):
    apply(write(tmp_path, CONFIG))
    only_org = CONFIG[: CONFIG.index("deployments:\n  - name: openai-gpt-4o")]

    apply(write(tmp_path, only_org, "org.yaml"), "--prune")

    assert ModelDeployment.objects.filter(name="openai-gpt-4o").exists()
    assert ModelGroup.objects.exists() and ModelAlias.objects.exists()


def test_an_error_anywhere_leaves_nothing_behind(tmp_path, env):
    # The team asks for more than its organization's budget: the service refuses, after the org was created.
    bad = CONFIG.replace("max_budget: 50.5", "max_budget: 900")
    message = apply_error(write(tmp_path, bad))

    assert "gateway.yaml:17: organizations[0].teams[0].max_budget: cannot exceed the organization's" in message
    assert not Organization.objects.filter(name="Initech").exists() and not AuditEvent.objects.exists()


def test_schema_errors_name_file_line_and_field(tmp_path, env):
    bad = CONFIG.replace("rpm_limit: 100", "rpm_limit: lots").replace("role: owner", "role: boss")
    message = apply_error(write(tmp_path, bad))

    assert "gateway.yaml:12: organizations[0].members[0].role: 'boss' is not one of" in message
    assert "gateway.yaml:15: organizations[0].teams[0].rpm_limit: 'lots' is not of type 'integer', 'null'" in message


def test_unknown_fields_and_duplicates_are_errors_with_their_line(tmp_path, env):
    bad = CONFIG.replace("        rpm_limit: 100\n", "        rpm_limt: 100\n").replace(
        "      - name: billing", "      - name: search"
    )
    message = apply_error(write(tmp_path, bad))
    assert "gateway.yaml:14: organizations[0].teams[0]: unknown field(s) ('rpm_limt' was unexpected)" in message

    dup = CONFIG.replace("      - name: billing", "      - name: search")
    message = apply_error(write(tmp_path, dup))
    assert "gateway.yaml:22: organizations[0].teams[1].name: team 'search' appears twice (first at line 14)" in message


def test_yaml_syntax_errors_name_their_line(tmp_path):
    message = apply_error(write(tmp_path, "version: 1\norganizations:\n  - name: [unclosed\n"))
    assert "gateway.yaml:4: (syntax):" in message


def test_an_inline_secret_is_refused_without_being_repeated(tmp_path, env):
    bad = CONFIG.replace("api_key: os.environ/OPENAI_KEY", "api_key: sk-live-abcdef0123456789")
    message = apply_error(write(tmp_path, bad))

    assert "gateway.yaml:40: deployments[0].api_key: an inline secret is not allowed" in message
    assert "sk-live-abcdef0123456789" not in message
    assert not ModelDeployment.objects.exists()


def test_a_referenced_variable_that_is_not_set_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AZURE_KEY", "x")
    monkeypatch.delenv("OPENAI_KEY", raising=False)
    message = apply_error(write(tmp_path, CONFIG))
    assert "gateway.yaml:40: deployments[0].api_key: environment variable OPENAI_KEY is not set." in message


def test_a_new_value_behind_the_same_reference_rotates_the_stored_key(tmp_path, env, monkeypatch):
    path = write(tmp_path, CONFIG)
    apply(path)
    monkeypatch.setenv("OPENAI_KEY", "sk-rotated-2")

    output = apply(path)

    assert "api_key: os.environ/OPENAI_KEY -> os.environ/OPENAI_KEY (new value)" in output
    assert ModelDeployment.objects.get(name="openai-gpt-4o").get_credentials() == "sk-rotated-2"
    assert "sk-rotated-2" not in output


def test_export_writes_references_and_round_trips_to_no_changes(tmp_path, env, acme, alpha, alice):
    apply(write(tmp_path, CONFIG))
    Customer.objects.create(organization=acme, external_id="acme-user", rpm_limit=7)
    text = export()

    data = yaml.safe_load(text)
    shared = data["deployments"][0]
    assert shared["api_key"] == "os.environ/OPENAI_KEY" and shared["input_cost_per_token"] == 0.0000025
    assert "sk-upstream-from-env-1" not in text and "azure-secret-from-env" not in text
    initech = next(o for o in data["organizations"] if o["name"] == "Initech")
    assert initech["teams"][1]["name"] == "search" and initech["teams"][1]["max_budget"] == 50.5

    output = apply(write(tmp_path, text, "exported.yaml"), "--prune")
    assert output.strip() == "no changes"


def test_export_of_an_admin_made_deployment_round_trips(tmp_path, monkeypatch, acme):
    deployment = ModelDeployment(model_name="m", provider="openai", model="m-up", organization=acme)
    deployment.set_credentials("sk-typed-in-the-admin")
    deployment.save()
    out, err = io.StringIO(), io.StringIO()
    call_command("gateway_export", stdout=out, stderr=err)

    assert f"os.environ/DEPLOYMENT_{deployment.pk}_API_KEY" in err.getvalue()
    monkeypatch.setenv(f"DEPLOYMENT_{deployment.pk}_API_KEY", "sk-typed-in-the-admin")
    output = apply(write(tmp_path, out.getvalue()), "--prune")

    assert "~ deployment Acme/deployment-" in output  # now remembered as coming from that variable
    assert ModelDeployment.objects.get().credentials_ref == f"os.environ/DEPLOYMENT_{deployment.pk}_API_KEY"
    assert ModelDeployment.objects.count() == 1
    assert apply(write(tmp_path, out.getvalue()), "--prune").strip() == "no changes"


def test_an_actor_cannot_touch_an_organization_they_may_not_change(tmp_path, env, acme, globex, olga, charlie):
    text = "version: 1\norganizations:\n  - name: Acme\n    rpm_limit: 5\n  - name: Globex\n    blocked: true\n"
    message = apply_error(write(tmp_path, text), "--actor", "olga")
    # olga administers Acme, but an org admin can't raise (or set) their own ceiling either: the service says so.
    assert "gateway.yaml:3: organizations[0]: not allowed: Only a superuser may do this." in message

    text = "version: 1\norganizations:\n  - name: Acme\n    teams:\n      - name: New\n  - name: Globex\n"
    message = apply_error(write(tmp_path, text), "--actor", "olga")
    assert "gateway.yaml:6: organizations[1].name: not allowed: olga may not change 'Globex'." in message
    assert not Team.objects.filter(name="New").exists()  # Acme's part was rolled back too

    text = "version: 1\norganizations:\n  - name: Acme\n    teams:\n      - name: New\n"
    assert "+ team Acme/New" in apply(write(tmp_path, text), "--actor", "olga")
    event = AuditEvent.objects.get(action="team.create")
    assert event.actor.username == "olga" and event.source == "config"


def test_the_schema_is_published_and_matches_the_validator(client):
    response = client.get("/api/v1/config/schema.json")

    assert response.status_code == 200 and response["content-type"] == "application/json"
    schema = response.json()
    assert schema["properties"]["version"] == {"const": 1}
    api_key = schema["properties"]["deployments"]["items"]["properties"]["api_key"]
    assert api_key["pattern"].startswith("^os\\.environ/")


ACCESS_GROUPS = """\
version: 1
access_groups:
  - name: gpt-4-family
    models: [gpt-4o, gpt-4o-mini]
    description: every GPT-4 size
organizations:
  - name: Initech
    access_groups:
      - name: claude
        models: ["claude-*", "anthropic/*"]
    allowed_models: [gpt-4-family, claude]
    teams:
      - name: search
        allowed_models: [gpt-4o]
"""


def test_access_groups_apply_export_and_round_trip(tmp_path):
    output = apply(write(tmp_path, ACCESS_GROUPS))

    shared = ModelAccessGroup.objects.get(name="gpt-4-family", organization=None)
    assert shared.members == ["gpt-4o", "gpt-4o-mini"] and shared.description == "every GPT-4 size"
    own = ModelAccessGroup.objects.get(name="claude", organization__name="Initech")
    assert own.members == ["claude-*", "anthropic/*"]
    assert "+ access group shared/gpt-4-family" in output and "+ access group Initech/claude" in output
    # The team lists a member of the organization's group: within its ceiling once the group is expanded.
    assert Team.objects.get(name="search").allowed_models == ["gpt-4o"]

    data = yaml.safe_load(export())
    assert data["access_groups"] == [
        {"name": "gpt-4-family", "models": ["gpt-4o", "gpt-4o-mini"], "description": "every GPT-4 size"}
    ]
    initech = next(o for o in data["organizations"] if o["name"] == "Initech")
    assert initech["access_groups"] == [{"name": "claude", "models": ["claude-*", "anthropic/*"]}]
    assert apply(write(tmp_path, export(), "exported.yaml"), "--prune").strip() == "no changes"

    changed = ACCESS_GROUPS.replace("models: [gpt-4o, gpt-4o-mini]", "models: [gpt-4o]")
    own_group = '    access_groups:\n      - name: claude\n        models: ["claude-*", "anthropic/*"]\n'
    changed = changed.replace(own_group, "")
    changed = changed.replace("allowed_models: [gpt-4-family, claude]", "allowed_models: [gpt-4-family]")
    output = apply(write(tmp_path, changed, "changed.yaml"), "--prune")
    assert "~ access group shared/gpt-4-family" in output and "- access group Initech/claude" in output
    assert ModelAccessGroup.objects.get(name="gpt-4-family").members == ["gpt-4o"]
    assert not ModelAccessGroup.objects.filter(name="claude").exists()


def test_a_team_model_outside_the_organizations_groups_is_an_error_at_its_line(tmp_path):
    text = ACCESS_GROUPS.replace("allowed_models: [gpt-4o]", "allowed_models: [llama-70b]")
    text = text.replace("allowed_models: [gpt-4-family, claude]", "allowed_models: [gpt-4-family]")
    error = apply_error(write(tmp_path, text))
    assert "gateway.yaml:13: organizations[0].teams[0].models: not allowed for the organization: llama-70b" in error
    assert not ModelAccessGroup.objects.exists()  # one transaction: nothing behind
