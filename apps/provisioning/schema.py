"""The JSON Schema of a gateway config file: published at /api/v1/config/schema.json and used by the validator.

One schema for both, so what an editor completes is exactly what ``gateway_apply`` accepts. Field names are
the admin's and the REST API's (``rpm_limit``, ``max_budget``, ``budget_duration``...). The schema checks
shapes; what needs the database (a member who does not exist, a limit above the organization's) is checked
by the services the file is applied through, and reported at the same file position.
"""

from __future__ import annotations

from apps.mcp.models import Transport
from apps.proxy.models import Provider, RoutingStrategy
from apps.teams.limits import BudgetDuration
from apps.teams.models import Role

SCHEMA_VERSION = 1
# A secret is always a reference to the environment of the process that applies the file.
SECRET_REF_PATTERN = r"^os\.environ/[A-Za-z_][A-Za-z0-9_]*$"
SECRET_FIELDS = ("api_key",)

_COUNT = {"type": ["integer", "null"], "minimum": 0}
_MONEY = {
    "description": "USD: a number or a decimal string.",
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"},
        {"type": "null"},
    ],
}
_NAME = {"type": "string", "minLength": 1, "maxLength": 200}
_MODELS = {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True}

LIMITS = {
    "rpm_limit": {**_COUNT, "description": "Requests per minute."},
    "tpm_limit": {**_COUNT, "description": "Tokens per minute."},
    "max_parallel_requests": _COUNT,
    "max_budget": {**_MONEY, "description": "Hard budget in USD per budget window."},
    "soft_budget": {**_MONEY, "description": "Alert threshold in USD per budget window."},
    "budget_duration": {"enum": ["", *BudgetDuration.values]},
}

_MODEL_LIMITS = {
    "type": "object",
    "description": 'Per-model limits for the whole team: {"gpt-4o": {"rpm_limit": 100}}.',
    "additionalProperties": {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: LIMITS[name] for name in LIMITS},
    },
}


_SECTION = {"type": ["object", "null"], "description": "null switches an inherited section off."}
GUARDRAILS = {
    "type": "object",
    "additionalProperties": False,
    "description": "Guardrail policy (docs/guardrails.md); a team's sections replace its organization's.",
    "properties": {
        "pii": {**_SECTION, "description": 'Entity type -> mask | block | off: {"entities": {"email": "mask"}}.'},
        "deny": {**_SECTION, "description": "Denied keywords and topics: {keywords: [...], topics: {name: [...]}}."},
        "max_input_chars": {"type": ["integer", "null"], "minimum": 1},
        "moderation": {**_SECTION, "description": "A classifier deployment: {model, kind, thresholds, on_error}."},
        "prompt_injection": {**_SECTION, "description": "Like moderation, with a prompt-injection classifier."},
    },
}


def _object(properties: dict, required: tuple[str, ...] = (), description: str = "") -> dict:
    schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    if description:
        schema["description"] = description
    return schema


MEMBER = _object(
    {
        "user": {**_NAME, "description": "A username (listed under users: or already existing)."},
        "role": {"enum": Role.values},
    },
    required=("user", "role"),
)

DEPLOYMENT = _object(
    {
        "name": {**_NAME, "description": "Stable name of this deployment in the file (how apply finds it again)."},
        "model_name": {**_NAME, "description": "The public name clients ask for; several deployments form a group."},
        "provider": {"enum": Provider.values},
        "model": {**_NAME, "description": "The upstream's model id."},
        "api_base": {"type": "string", "maxLength": 500},
        "api_key": {
            "type": "string",
            "pattern": SECRET_REF_PATTERN,
            "description": "A reference, os.environ/NAME, resolved when the file is applied. Never the key itself.",
        },
        "api_version": {"type": "string", "maxLength": 40},
        "region": {"type": "string", "maxLength": 40},
        "input_cost_per_token": _MONEY,
        "output_cost_per_token": _MONEY,
        "cached_input_cost_per_token": _MONEY,
        "cache_creation_input_token_cost": _MONEY,
        "rpm_limit": _COUNT,
        "tpm_limit": _COUNT,
        "max_parallel_requests": _COUNT,
        "weight": {"type": "integer", "minimum": 0},
        "priority": {"type": "integer", "minimum": 0, "maximum": 32767},
        "timeout_seconds": {"type": ["number", "null"], "minimum": 0},
        "extra": {"type": "object", "description": "Provider-specific options (never credentials)."},
        "enabled": {"type": "boolean"},
    },
    required=("name", "model_name", "provider", "model"),
)

ACCESS_GROUP = _object(
    {
        "name": {
            **_NAME,
            "pattern": r"^[^*?\[\s]+$",
            "description": "What allowed_models lists name instead of models.",
        },
        "models": {
            **_MODELS,
            "description": "Model names or fnmatch patterns: claude-* (by name), openai/* (served by that provider).",
        },
        "description": {"type": "string", "maxLength": 500},
    },
    required=("name", "models"),
    description="A named set of models that keys, teams and organizations may list in allowed_models.",
)

CUSTOMER = _object(
    {"external_id": {"type": "string", "minLength": 1, "maxLength": 255}, **LIMITS, "blocked": {"type": "boolean"}},
    required=("external_id",),
    description="An end user of the organization's apps, identified by the `user` field clients send.",
)

TEAM = _object(
    {
        "name": _NAME,
        **LIMITS,
        "allowed_models": {**_MODELS, "description": "Empty: every model the organization allows."},
        "model_limits": _MODEL_LIMITS,
        "session_max_budget": _MONEY,
        "session_max_iterations": _COUNT,
        "budget_clamp_max_tokens": {"type": "boolean"},
        "trace_content": {"type": "boolean", "description": "Prompt and completion text in the team's traces."},
        "cache_ttl_seconds": {
            "type": ["integer", "null"],
            "minimum": 0,
            "maximum": 31_536_000,
            "description": "Response cache TTL for the team's keys (a key's own setting wins); null or 0: off.",
        },
        "guardrails": GUARDRAILS,
        "blocked": {"type": "boolean"},
        "members": {"type": "array", "items": MEMBER},
    },
    required=("name",),
)

MCP_GRANT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["team"],
    "properties": {
        "team": {"type": "string", "minLength": 1, "description": "A team of this organization."},
        "all_tools": {"type": "boolean", "description": "Every tool of the server, now and later."},
        "tools": {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True},
        "tool_calls_per_minute": _COUNT,
        "max_parallel_tool_calls": _COUNT,
    },
}
MCP_SERVER_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "description": "An upstream MCP server of this organization, reached through /mcp (docs/mcp.md).",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 64, "description": "Its tools' prefix."},
        "transport": {"enum": Transport.values, "description": "stdio: superusers only."},
        "url": {"type": "string", "maxLength": 500},
        "command": {"type": "string", "maxLength": 500},
        "args": {"type": "array", "items": {"type": "string"}},
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string", "pattern": SECRET_REF_PATTERN},
            "description": "HTTP headers as references, os.environ/NAME. Never the values themselves.",
        },
        "price_per_call": _MONEY,
        "tool_prices": {"type": "object", "additionalProperties": _MONEY},
        "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 600},
        "enabled": {"type": "boolean"},
        "grants": {"type": "array", "items": MCP_GRANT_SCHEMA},
    },
}

ORGANIZATION = _object(
    {
        "name": _NAME,
        "time_zone": {"type": "string", "description": "IANA zone budget windows align to, e.g. Europe/Berlin."},
        **LIMITS,
        "allowed_models": {**_MODELS, "description": "Empty: every model."},
        "guardrails": GUARDRAILS,
        "blocked": {"type": "boolean"},
        "access_groups": {
            "type": "array",
            "items": ACCESS_GROUP,
            "description": "This organization's own access groups (shadowing shared ones of the same name).",
        },
        "members": {"type": "array", "items": MEMBER, "description": "Organization-wide roles."},
        "teams": {"type": "array", "items": TEAM},
        "customers": {"type": "array", "items": CUSTOMER},
        "deployments": {
            "type": "array",
            "items": DEPLOYMENT,
            "description": "Deployments only this organization uses.",
        },
        "mcp_servers": {"type": "array", "items": MCP_SERVER_SCHEMA, "description": "Reached through /mcp."},
    },
    required=("name",),
)

USER = _object(
    {
        "username": {"type": "string", "minLength": 1, "maxLength": 150},
        "email": {"type": "string"},
        "first_name": {"type": "string", "maxLength": 150},
        "last_name": {"type": "string", "maxLength": 150},
        "is_active": {"type": "boolean"},
        **LIMITS,
    },
    required=("username",),
)

MODEL_GROUP = _object(
    {
        "model_name": _NAME,
        "strategy": {"enum": RoutingStrategy.values},
        "fallbacks": {**_MODELS, "description": "Model names tried, in order, after this group fails."},
        "num_retries": {"type": ["integer", "null"], "minimum": 0, "maximum": 32767},
        "rpm_capacity": _COUNT,
        "tpm_capacity": _COUNT,
    },
    required=("model_name",),
    description="Routing settings of one public model name.",
)

CONFIG_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "/api/v1/config/schema.json",
    "title": "LLM gateway configuration (manage.py gateway_apply)",
    "type": "object",
    "additionalProperties": False,
    "required": ["version"],
    "properties": {
        "version": {"const": SCHEMA_VERSION},
        "users": {"type": "array", "items": USER, "description": "People; never removed by --prune."},
        "organizations": {"type": "array", "items": ORGANIZATION},
        "deployments": {"type": "array", "items": DEPLOYMENT, "description": "Shared by every organization."},
        "access_groups": {"type": "array", "items": ACCESS_GROUP, "description": "Shared by every organization."},
        "model_groups": {"type": "array", "items": MODEL_GROUP},
        "aliases": {
            "type": "object",
            "additionalProperties": _NAME,
            "description": "Other public names for a model name: {alias: model_name}.",
        },
    },
}
