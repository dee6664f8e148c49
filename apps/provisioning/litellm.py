"""LiteLLM proxy config.yaml -> this gateway's config file, and a report of everything without an equivalent.

Nothing is dropped silently: every key of the LiteLLM file is either mapped (into deployments, model
groups, aliases, access groups from ``model_info.access_groups``) or named in the report with its line
and why. Secrets are never copied: an ``os.environ/NAME`` reference stays a reference; an inline key is
replaced by a reference to a variable the report names, and its value is not repeated anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import yaml

from apps.provisioning.document import Document, document_parse, path_label
from apps.provisioning.schema import SCHEMA_VERSION

# LiteLLM prefixes of OpenAI-compatible hosted APIs -> the gateway's preset (apps/proxy/providers/openai.py).
HOSTED_PRESETS = {
    "groq": "groq",
    "together_ai": "together",
    "fireworks_ai": "fireworks",
    "deepseek": "deepseek",
    "mistral": "mistral",
    "openrouter": "openrouter",
    "perplexity": "perplexity",
    "xai": "xai",
    "deepinfra": "deepinfra",
    "cerebras": "cerebras",
}
ROUTING_STRATEGIES = {
    "simple-shuffle": "simple-shuffle",
    "least-busy": "least-busy",
    "latency-based-routing": "lowest-latency",
    "cost-based-routing": "lowest-cost",
}
# litellm_params copied one to one (gateway field <- LiteLLM field).
DIRECT_PARAMS = {
    "rpm": "rpm_limit",
    "tpm": "tpm_limit",
    "max_parallel_requests": "max_parallel_requests",
    "timeout": "timeout_seconds",
    "weight": "weight",
    "order": "priority",
    "input_cost_per_token": "input_cost_per_token",
    "output_cost_per_token": "output_cost_per_token",
    "cache_read_input_token_cost": "cached_input_cost_per_token",
    "input_cost_per_token_cache_hit": "cached_input_cost_per_token",
    "cache_creation_input_token_cost": "cache_creation_input_token_cost",
}
# model_info keys that only describe the model to LiteLLM's own UI or cost map: reported as informational.
INFO_ONLY = {"mode", "base_model", "max_tokens", "max_input_tokens", "max_output_tokens", "version", "description"}
# Why some common litellm_params are not imported (anything else gets the generic reason).
PARAM_REASONS = {
    "litellm_credential_name": "credential_list has no equivalent: give the deployment api_key: os.environ/NAME.",
    "organization": "an OpenAI organization header has no equivalent; not imported.",
    "extra_headers": "extra upstream headers have no equivalent; not imported.",
    "stream_timeout": "the gateway has one timeout per deployment (timeout_seconds); not imported.",
    "azure_ad_token": "Azure AD tokens have no equivalent (api_key only); not imported.",
    "tenant_id": "Azure AD auth has no equivalent (api_key only); not imported.",
    "client_id": "Azure AD auth has no equivalent (api_key only); not imported.",
    "client_secret": "Azure AD auth has no equivalent (api_key only); not imported.",
}
# Settings LiteLLM reads from router_settings or litellm_settings alike.
TWINS = frozenset({"num_retries", "timeout", "fallbacks", "allowed_fails", "cooldown_time", "routing_strategy"})
ENV_REF = re.compile(r"^os\.environ/([A-Za-z_][A-Za-z0-9_]*)$")


@dataclass
class LitellmImport:
    config: dict
    report: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.config, sort_keys=False, allow_unicode=True, width=120)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "model"


def _env_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper()


class _Converter:
    def __init__(self, document: Document, environ: Mapping[str, str]) -> None:
        self.doc, self.environ = document, environ
        self.report: list[str] = []
        # What was left out (as opposed to notes on how something was carried over): (path, reason).
        self.dropped: list[tuple[tuple, str]] = []
        self.deployments: list[dict] = []
        self.groups: dict[str, dict] = {}
        self.aliases: dict[str, str] = {}
        # LiteLLM's model_info.access_groups, turned around: group name -> the model names tagged with it.
        self.access_groups: dict[str, list[str]] = {}
        self.router_keys: set[str] = set()

    def note(self, path: tuple, message: str) -> None:
        self.report.append(f"{self.doc.filename}:{self.doc.line(path)}: {path_label(path)}: {message}")

    def unmapped(self, path: tuple, why: str = "no equivalent in the gateway; not imported.") -> None:
        self.dropped.append((path, why))
        self.note(path, why)

    # -- model_list --------------------------------------------------------------------------------------

    def model_list(self, items) -> None:
        if not isinstance(items, list):
            self.unmapped(("model_list",), "must be a list; nothing imported from it.")
            return
        used_names: set[str] = set()
        for i, entry in enumerate(items):
            path = ("model_list", i)
            if not isinstance(entry, dict) or not isinstance(entry.get("litellm_params"), dict):
                self.unmapped(path, "an entry without litellm_params; not imported.")
                continue
            deployment = self.deployment(path, entry)
            if deployment is None:
                continue
            name = deployment["name"]
            suffix = 2
            while name in used_names:
                name, suffix = f"{deployment['name']}-{suffix}", suffix + 1
            deployment["name"] = name
            used_names.add(name)
            self.deployments.append(deployment)
            self.groups.setdefault(deployment["model_name"], {"model_name": deployment["model_name"]})

    def _value(self, path: tuple, value, *, field_name: str):
        """A non-secret value, resolving LiteLLM's ``os.environ/NAME`` from the importing environment."""
        match = ENV_REF.match(value) if isinstance(value, str) else None
        if not match:
            return value
        if match.group(1) in self.environ:
            self.note(path, f"{field_name} read from ${match.group(1)} at import time (the gateway stores the value).")
            return self.environ[match.group(1)]
        self.note(path, f"${match.group(1)} is not set here: {field_name} left empty; set it before applying.")
        return None

    def _secret(self, path: tuple, value, *, fallback_name: str) -> str | None:
        if value is None or value == "":
            return None
        if isinstance(value, str) and ENV_REF.match(value):
            return value
        if isinstance(value, str) and value.strip().lower() in ("none", "null", "fake-key", "anything", "dummy"):
            self.note(path, "a placeholder key (for a server that needs none); not imported.")
            return None
        reference = f"os.environ/{fallback_name}"
        self.note(path, f"an inline secret: not copied. Written as {reference}: set {fallback_name} to it.")
        return reference

    def deployment(self, path: tuple, entry: dict) -> dict | None:
        params = dict(entry["litellm_params"])
        params_path = (*path, "litellm_params")
        model_name = entry.get("model_name")
        target = params.pop("model", None)
        if not isinstance(model_name, str) or not isinstance(target, str) or not target:
            self.unmapped(path, "model_name and litellm_params.model are required; not imported.")
            return None
        if "*" in model_name or "*" in target:
            self.unmapped(
                path,
                f"wildcard model {model_name!r} -> {target!r}: the gateway routes named models only; "
                "add a deployment per model you want to offer. Not imported.",
            )
            return None
        info = entry.get("model_info") if isinstance(entry.get("model_info"), dict) else {}
        name = info.get("id") if isinstance(info.get("id"), str) and info.get("id") else _slug(model_name)
        out: dict = {"name": str(name), "model_name": model_name}
        api_base = self._value((*params_path, "api_base"), params.pop("api_base", None), field_name="api_base")
        key_var = _env_name(f"{name}_api_key")
        provider = self.provider(path, target, api_base, params, out)
        if provider is None:
            return None
        api_key = self._secret((*params_path, "api_key"), params.pop("api_key", None), fallback_name=key_var)
        if api_key and "api_key" not in out:
            out["api_key"] = api_key
        if api_base and "api_base" not in out:
            out["api_base"] = api_base
        version = self._value((*params_path, "api_version"), params.pop("api_version", None), field_name="api_version")
        if version:
            out["api_version"] = str(version)
        for litellm_name, gateway_name in DIRECT_PARAMS.items():
            for source in (params, info):
                if litellm_name in source:
                    value = source.pop(litellm_name)
                    if value is not None:
                        out[gateway_name] = value
        for key in params:
            generic = "a per-call parameter or provider option the gateway does not set for clients; not imported."
            self.unmapped((*params_path, key), PARAM_REASONS.get(key, generic))
        if "access_groups" in info:
            self.tag_access_groups((*path, "model_info", "access_groups"), model_name, info.pop("access_groups"))
        for key in info:
            if key == "id":
                continue
            why = "describes the model to LiteLLM only; not needed." if key in INFO_ONLY else None
            self.unmapped((*path, "model_info", key), why or "no equivalent in the gateway; not imported.")
        for key in entry:
            if key not in ("model_name", "litellm_params", "model_info"):
                self.unmapped((*path, key))
        return out

    def tag_access_groups(self, path: tuple, model_name: str, value) -> None:
        """``model_info.access_groups: [beta]`` puts the public name in the gateway's access group ``beta``."""
        if not isinstance(value, list) or not all(isinstance(g, str) and g.strip() for g in value):
            self.unmapped(path, "must be a list of group names; not imported.")
            return
        for group in value:
            members = self.access_groups.setdefault(group.strip(), [])
            if model_name not in members:
                members.append(model_name)

    def provider(self, path: tuple, target: str, api_base, params: dict, out: dict) -> str | None:
        """Set provider and model from LiteLLM's ``prefix/model``; None when there is no equivalent."""
        params_path = (*path, "litellm_params")
        prefix, _, rest = target.partition("/")
        if not rest:
            prefix, rest = "", target
        if prefix == "":
            guessed = "anthropic" if rest.startswith("claude") else "gemini" if rest.startswith("gemini") else "openai"
            self.note((*params_path, "model"), f"no provider prefix: imported as {guessed}/{rest}, as LiteLLM infers.")
            prefix = guessed
        if prefix == "openai":
            hosted_openai = not api_base or urlsplit(str(api_base)).hostname == "api.openai.com"
            out.update(provider="openai" if hosted_openai else "openai_compatible", model=rest)
        elif prefix in ("azure", "anthropic", "gemini"):
            out.update(provider=prefix, model=rest)
        elif prefix == "vertex_ai":
            if not rest.startswith("gemini"):
                self.unmapped(path, f"vertex_ai/{rest}: only Gemini models have an equivalent; not imported.")
                return None
            out.update(provider="gemini", model=rest)
            for key in ("vertex_project", "vertex_location", "vertex_credentials"):
                if key in params:
                    params.pop(key)
                    self.unmapped((*params_path, key), "Vertex AI auth has no equivalent; not imported.")
            var = _env_name(f"{out['name']}_api_key")
            out["api_key"] = f"os.environ/{var}"
            self.note(
                (*params_path, "model"),
                f"imported as the Gemini API (generativelanguage.googleapis.com): set {var} to a Gemini API key.",
            )
        elif prefix == "bedrock":
            for sub in ("converse/", "invoke/"):
                rest = rest.removeprefix(sub)
            out.update(provider="bedrock", model=rest)
            region = self._value(
                (*params_path, "aws_region_name"), params.pop("aws_region_name", None), field_name="aws_region_name"
            )
            if region:
                out["region"] = str(region)
            var = _env_name(f"{out['name']}_aws_credentials")
            given = [k for k in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token") if k in params]
            for key in given:
                params.pop(key)
            out["api_key"] = f"os.environ/{var}"
            self.note(
                (*params_path, "model"),
                f"Bedrock credentials are one value here: set {var} to ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]"
                + (f" (from {', '.join(given)})." if given else " (LiteLLM used the default AWS chain)."),
            )
        elif prefix in ("hosted_vllm", "ollama", "ollama_chat"):
            preset = "vllm" if prefix == "hosted_vllm" else "ollama"
            out.update(provider="openai_compatible", model=rest, extra={"preset": preset})
            if api_base and preset == "ollama" and not urlsplit(str(api_base)).path.rstrip("/").endswith("/v1"):
                out["api_base"] = str(api_base).rstrip("/") + "/v1"
                self.note((*params_path, "api_base"), "Ollama is reached on its OpenAI-compatible /v1 path.")
        elif prefix in HOSTED_PRESETS:
            out.update(provider="openai_compatible", model=rest, extra={"preset": HOSTED_PRESETS[prefix]})
        elif api_base:
            out.update(provider="openai_compatible", model=rest)
            self.note((*params_path, "model"), f"{prefix}/: imported as an OpenAI-compatible server at api_base.")
        else:
            self.unmapped(path, f"provider {prefix!r} has no equivalent in the gateway; not imported.")
            return None
        return out["provider"]

    # -- settings ----------------------------------------------------------------------------------------

    def routing(self, section: str, settings) -> None:
        """router_settings (and their litellm_settings twins: num_retries, fallbacks, ...)."""
        if not isinstance(settings, dict):
            return
        for key, value in settings.items():
            path = (section, key)
            twin = "timeout" if key == "request_timeout" else key
            if section == "litellm_settings" and twin in self.router_keys and twin in TWINS:
                self.unmapped(path, f"router_settings.{twin} is set too and takes precedence; this value is not used.")
                continue
            if key == "routing_strategy":
                strategy = ROUTING_STRATEGIES.get(value)
                if strategy is None:
                    self.unmapped(path, f"{value!r} has no equivalent; groups keep the weighted shuffle.")
                    continue
                for group in self.groups.values():
                    group["strategy"] = strategy
            elif key == "num_retries":
                for group in self.groups.values():
                    group.setdefault("num_retries", value)
            elif key in ("timeout", "request_timeout"):
                for deployment in self.deployments:
                    deployment.setdefault("timeout_seconds", value)
            elif key == "fallbacks":
                self.fallbacks(path, value)
            elif key == "allowed_fails":
                for deployment in self.deployments:
                    deployment.setdefault("extra", {}).setdefault("cooldown_failures", int(value) + 1)
                self.note(path, "a deployment cools down after allowed_fails + 1 consecutive failures.")
            elif key == "cooldown_time":
                for deployment in self.deployments:
                    deployment.setdefault("extra", {}).setdefault("cooldown_seconds", value)
            elif key == "model_group_alias":
                self.model_group_alias(path, value)
            elif key == "context_window_fallbacks":
                self.unmapped(path, "no separate context-window fallback; list these in the group's fallbacks.")
            elif key.startswith("redis_"):
                self.unmapped(path, "the gateway's Redis is REDIS_URL (environment); not imported.")
            elif section == "litellm_settings":
                self.unmapped(path, "a LiteLLM module setting with no equivalent; not imported.")
            else:
                self.unmapped(path)

    def fallbacks(self, path: tuple, value) -> None:
        if not isinstance(value, list):
            self.unmapped(path, "expected a list of {model: [fallbacks]}; not imported.")
            return
        for i, rule in enumerate(value):
            if not isinstance(rule, dict):
                self.unmapped((*path, i), "expected {model: [fallbacks]}; not imported.")
                continue
            for model_name, targets in rule.items():
                if model_name not in self.groups:
                    self.unmapped((*path, i, model_name), "names no imported model; not imported.")
                    continue
                targets = targets if isinstance(targets, list) else [targets]
                self.groups[model_name].setdefault("fallbacks", [str(t) for t in targets])

    def model_group_alias(self, path: tuple, value) -> None:
        if not isinstance(value, dict):
            self.unmapped(path, "expected {alias: model_name}; not imported.")
            return
        for alias, target in value.items():
            if isinstance(target, dict):  # {"model": "gpt-4o", "hidden": true}
                if target.get("hidden"):
                    self.note((*path, alias), "hidden: aliases are always listed here.")
                target = target.get("model")
            if isinstance(target, str):
                self.aliases[str(alias)] = target
            else:
                self.unmapped((*path, alias), "no target model; not imported.")

    def general(self, settings) -> None:
        if not isinstance(settings, dict):
            return
        for key in settings:
            path = ("general_settings", key)
            if key == "master_key":
                self.unmapped(path, "not copied: the gateway's master key is GATEWAY_MASTER_KEY (environment).")
            elif key == "database_url":
                self.unmapped(path, "not copied: the gateway's database is DATABASE_URL (environment).")
            else:
                self.unmapped(path, "a LiteLLM server setting with no equivalent; not imported.")


def litellm_model_entry(entry: dict) -> tuple[dict | None, list[tuple[tuple, str]]]:
    """One model_list entry (LiteLLM's ``/model/new`` body) as a deployment, and what could not be carried over.

    ``model_info.access_groups`` is the caller's too (``/model/new`` adds the model to those groups).

        Secrets are the caller's business here: ``litellm_params.api_key`` is taken out before the conversion
        (the API stores it encrypted), so the converter never turns it into an environment reference.
    """
    converter = _Converter(Document(filename="request", data={"model_list": [entry]}), environ={})
    deployment = (
        converter.deployment(("model_list", 0), entry) if isinstance(entry.get("litellm_params"), dict) else None
    )
    if deployment is None and not converter.dropped:
        converter.unmapped(("litellm_params",), "required, with model.")
    return deployment, [(path[2:] if path[:2] == ("model_list", 0) else path, why) for path, why in converter.dropped]


def litellm_convert(text: str, *, filename: str, environ: Mapping[str, str]) -> LitellmImport:
    """Read a LiteLLM proxy config and return the gateway config plus the report."""
    document = document_parse(text, filename=filename)
    data = document.data
    converter = _Converter(document, environ)
    converter.model_list(data.get("model_list", []))
    litellm_settings = data.get("litellm_settings") if isinstance(data.get("litellm_settings"), dict) else {}
    router_settings = data.get("router_settings") if isinstance(data.get("router_settings"), dict) else {}
    # LiteLLM reads num_retries, fallbacks... from either section; router_settings wins, so it goes first.
    converter.router_keys = set(router_settings)
    converter.routing("router_settings", router_settings)
    converter.routing("litellm_settings", litellm_settings)
    converter.general(data.get("general_settings"))
    for key in data:
        if key not in ("model_list", "litellm_settings", "router_settings", "general_settings"):
            why = "set these in the gateway's environment." if key == "environment_variables" else None
            converter.unmapped((key,), why or "no equivalent in the gateway; not imported.")
    config: dict = {"version": SCHEMA_VERSION}
    if converter.deployments:
        config["deployments"] = converter.deployments
    groups = [g for g in converter.groups.values() if len(g) > 1]
    if groups:
        config["model_groups"] = groups
    if converter.aliases:
        config["aliases"] = converter.aliases
    if converter.access_groups:
        config["access_groups"] = [
            {"name": name, "models": models} for name, models in sorted(converter.access_groups.items())
        ]
    return LitellmImport(config=config, report=converter.report)
