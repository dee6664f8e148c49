"""import_litellm on realistic LiteLLM proxy configs (tests/fixtures/litellm/, written from LiteLLM's docs).

The rule that matters most: nothing in the LiteLLM file is dropped silently. Every key is either mapped
into the gateway's config or named, with its line, in the report.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from apps.provisioning.document import document_load, path_label
from apps.proxy.models import ModelAlias, ModelDeployment, ModelGroup
from apps.teams.models import ModelAccessGroup

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "litellm"
ALL = sorted(p.name for p in FIXTURES.glob("*.yaml"))

# Keys the importer maps into the gateway's config (anything else must be in the report).
MAPPED_PARAMS = {
    "model",
    "api_key",
    "api_base",
    "api_version",
    "aws_region_name",
    "aws_access_key_id",
    "aws_secret_access_key",
    "rpm",
    "tpm",
    "timeout",
    "order",
    "weight",
    "max_parallel_requests",
    "input_cost_per_token",
    "output_cost_per_token",
}
MAPPED_INFO = {"id", "input_cost_per_token", "output_cost_per_token", "access_groups"}
MAPPED_SETTINGS = {
    "routing_strategy",
    "num_retries",
    "timeout",
    "request_timeout",
    "fallbacks",
    "allowed_fails",
    "cooldown_time",
    "model_group_alias",
}


def run_import(name: str, *args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_litellm", "--config", str(FIXTURES / name), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def imported(name: str) -> tuple[dict, str]:
    out, report = run_import(name)
    return yaml.safe_load(out), report


def by_name(config: dict) -> dict[str, dict]:
    return {d["name"]: d for d in config.get("deployments", [])}


@pytest.fixture(autouse=True)
def upstream_env(monkeypatch):
    monkeypatch.setenv("MOCK_UPSTREAM_BASE", "http://127.0.0.1:9/v1")


@pytest.mark.parametrize("name", ALL)
def test_nothing_is_dropped_silently(name):
    """Every key of the LiteLLM file is mapped, or its path is in the report (or its whole entry is)."""
    source = yaml.safe_load((FIXTURES / name).read_text())
    _, report = imported(name)
    reported = set(re.findall(r"^\S+?:\d+: (\S+):", report, flags=re.M))

    def covered(path: tuple) -> bool:
        return any(path_label(path[:n]) in reported for n in range(1, len(path) + 1))

    missing = []
    for i, entry in enumerate(source.get("model_list", [])):
        for key in entry.get("litellm_params", {}):
            if key not in MAPPED_PARAMS and not covered(("model_list", i, "litellm_params", key)):
                missing.append(path_label(("model_list", i, "litellm_params", key)))
        for key in entry.get("model_info", {}):
            if key not in MAPPED_INFO and not covered(("model_list", i, "model_info", key)):
                missing.append(path_label(("model_list", i, "model_info", key)))
    for section in ("router_settings", "litellm_settings", "general_settings"):
        for key in source.get(section, {}) or {}:
            if key not in MAPPED_SETTINGS and not covered((section, key)):
                missing.append(path_label((section, key)))
    for key in source:
        mapped_sections = ("model_list", "router_settings", "litellm_settings", "general_settings")
        if key not in mapped_sections and not covered((key,)):
            missing.append(key)
    assert not missing, f"dropped without a word: {missing}\n{report}"


@pytest.mark.parametrize("name", ALL)
def test_the_output_is_a_valid_gateway_config(name):
    out, _ = run_import(name)
    document_load(out, filename=name)  # raises ConfigError on any schema problem


def test_azure_load_balancing_maps_groups_routing_and_aliases():
    config, report = imported("azure_openai_load_balancing.yaml")
    deployments = by_name(config)

    eu = deployments["azure-gpt-4o-eu"]  # model_info.id names the deployment
    assert (eu["provider"], eu["model"], eu["model_name"]) == ("azure", "gpt-4o-eu", "gpt-4o")
    assert eu["api_key"] == "os.environ/AZURE_API_KEY_EU" and eu["api_version"] == "2024-06-01"
    assert (eu["rpm_limit"], eu["tpm_limit"], eu["timeout_seconds"]) == (600, 120000, 30)
    assert eu["extra"] == {"cooldown_failures": 4, "cooldown_seconds": 60}
    assert deployments["azure-gpt-4o-ca"]["model_name"] == "gpt-4o"
    mini = deployments["gpt-4o-mini"]
    assert mini["provider"] == "openai" and mini["input_cost_per_token"] == 0.00000015
    groups = {g["model_name"]: g for g in config["model_groups"]}
    assert groups["gpt-4o"] == {
        "model_name": "gpt-4o",
        "strategy": "lowest-latency",
        "num_retries": 2,
        "fallbacks": ["gpt-4o-mini"],
    }
    assert config["aliases"] == {"gpt-4": "gpt-4o"}
    assert "general_settings.master_key: not copied" in report
    assert ":45: router_settings.redis_host:" in report


def test_multi_provider_prefixes_become_the_gateways_providers():
    config, report = imported("multi_provider.yaml")
    deployments = by_name(config)

    assert deployments["claude-sonnet"]["provider"] == "anthropic"
    assert deployments["claude-sonnet"]["output_cost_per_token"] == 0.000015  # from model_info
    assert deployments["claude-sonnet-2"]["provider"] == "anthropic"  # no prefix: inferred, and reported
    assert deployments["claude-sonnet-2"]["priority"] == 2
    assert deployments["gemini-pro"]["provider"] == "gemini"
    flash = deployments["gemini-flash"]  # vertex_ai/ gemini
    assert (flash["provider"], flash["model"]) == ("gemini", "gemini-1.5-flash")
    bedrock = deployments["claude-haiku-bedrock"]
    assert (bedrock["provider"], bedrock["model"], bedrock["region"]) == (
        "bedrock",
        "anthropic.claude-3-haiku-20240307-v1:0",
        "eu-central-1",
    )
    assert bedrock["api_key"] == "os.environ/CLAUDE_HAIKU_BEDROCK_AWS_CREDENTIALS"
    groq = deployments["llama-70b"]
    assert (groq["provider"], groq["extra"], groq["tpm_limit"]) == ("openai_compatible", {"preset": "groq"}, 6000)
    assert "imagen" not in {d["model_name"] for d in deployments.values()}
    groups = {g["model_name"]: g for g in config["model_groups"]}
    assert groups["claude-sonnet"]["fallbacks"] == ["gemini-pro", "llama-70b"]
    assert groups["claude-sonnet"]["num_retries"] == 3  # router_settings wins over litellm_settings
    assert "strategy" not in groups["claude-sonnet"]  # usage-based-routing-v2: no equivalent, reported
    for expected in (
        ":34: model_list[5]: vertex_ai/imagegeneration@006: only Gemini models",
        "router_settings.routing_strategy: 'usage-based-routing-v2' has no equivalent",
        "router_settings.context_window_fallbacks:",
        "litellm_settings.num_retries: router_settings.num_retries is set too",
        "litellm_settings.fallbacks[1].gpt-5: names no imported model",
        "litellm_settings.max_budget:",
        "set CLAUDE_HAIKU_BEDROCK_AWS_CREDENTIALS to ACCESS_KEY_ID:SECRET_ACCESS_KEY",
    ):
        assert expected in report


def test_self_hosted_servers_and_what_the_gateway_does_not_do():
    out, report = run_import("self_hosted.yaml")
    config = yaml.safe_load(out)
    deployments = by_name(config)

    vllm = deployments["llama-3-8b"]
    assert (vllm["provider"], vllm["extra"], vllm["api_base"]) == (
        "openai_compatible",
        {"preset": "vllm"},
        "http://vllm.internal:8000/v1",
    )
    assert "api_key" not in vllm  # "none" is a placeholder, reported
    assert deployments["mistral-local"]["api_base"] == "http://ollama.internal:11434/v1"
    qwen = deployments["qwen"]
    assert qwen["provider"] == "openai_compatible" and qwen["api_key"] == "os.environ/QWEN_API_KEY"
    # The inline key is never copied, neither into the config nor into the report.
    assert "sk-inline-0123456789abcdef" not in out + report and "sk-1234" not in out + report
    assert ":18: model_list[2].litellm_params.api_key: an inline secret: not copied" in report
    assert ":21: model_list[3]: provider 'huggingface' has no equivalent" in report
    assert ":24: model_list[4]: wildcard model '*'" in report
    assert ":36: environment_variables:" in report
    assert set(deployments) == {"llama-3-8b", "mistral-local", "qwen"}


@pytest.mark.django_db
@pytest.mark.parametrize("name", ALL)
def test_each_import_applies_and_applying_again_changes_nothing(name, monkeypatch):
    config, _ = imported(name)
    for deployment in config.get("deployments", []):
        if "api_key" in deployment:
            monkeypatch.setenv(deployment["api_key"].split("/", 1)[1], "value-from-the-environment")

    out, _ = run_import(name, "--apply")

    assert ModelDeployment.objects.count() == len(config.get("deployments", []))
    assert "created" in out
    for deployment in config.get("deployments", []):
        row = ModelDeployment.objects.get(name=deployment["name"])
        assert (row.provider, row.model) == (deployment["provider"], deployment["model"])
        if "api_key" in deployment:
            assert row.credentials_ref == deployment["api_key"]
            assert row.get_credentials() == "value-from-the-environment"
    assert ModelGroup.objects.count() == len(config.get("model_groups", []))
    assert ModelAlias.objects.count() == len(config.get("aliases", {}))
    groups = {g.name: g.members for g in ModelAccessGroup.objects.filter(organization=None)}
    assert groups == {g["name"]: g["models"] for g in config.get("access_groups", [])}
    assert run_import(name, "--apply")[0].strip() == "no changes"


@pytest.mark.django_db
def test_dry_run_shows_the_changes_and_writes_nothing(monkeypatch):
    monkeypatch.setenv("MOCK_UPSTREAM_KEY", "sk-upstream")
    out, _ = run_import("mock_upstream.yaml", "--dry-run")

    assert "+ deployment shared/imported-gpt" in out and "dry run, nothing written" in out
    assert not ModelDeployment.objects.exists() and not ModelAlias.objects.exists()


def test_an_unreachable_litellm_database_is_a_clear_error_without_its_password():
    with pytest.raises(CommandError) as caught:
        call_command("import_litellm", "--database-url", "postgres://litellm:hunter2@127.0.0.1:1/litellm")
    assert "cannot read LiteLLM's database" in str(caught.value) and "hunter2" not in str(caught.value)


def test_model_info_access_groups_become_the_gateways_access_groups():
    config, report = imported("access_groups.yaml")

    assert config["access_groups"] == [
        {"name": "beta-models", "models": ["gpt-4o", "claude-3-5-sonnet"]},
        {"name": "gpt-4-family", "models": ["gpt-4o", "gpt-4o-mini"]},
    ]
    # A group name that is not a list is reported with its line, not guessed at.
    assert ":27: model_list[3].model_info.access_groups: must be a list of group names" in report
