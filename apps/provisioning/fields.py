"""What a config file sets on each kind of object, the value an absent field means, and how values compare.

A config file is declarative: a field left out means its default (no limit, not blocked...), so deleting a
line from the file and applying it again removes that setting, and an export writes only what differs.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from apps.teams.limits import LIMIT_FIELDS

_LIMITS = {name: None for name in LIMIT_FIELDS} | {"budget_duration": ""}

ORGANIZATION_DEFAULTS = {"time_zone": "UTC", **_LIMITS, "allowed_models": [], "blocked": False}
TEAM_DEFAULTS = {
    **_LIMITS,
    "allowed_models": [],
    "model_limits": {},
    "session_max_budget": None,
    "session_max_iterations": None,
    "budget_clamp_max_tokens": False,
    "trace_content": False,
    "cache_ttl_seconds": None,
    "blocked": False,
}
CUSTOMER_DEFAULTS = {**_LIMITS, "blocked": False}
USER_DEFAULTS = {"email": "", "first_name": "", "last_name": "", "is_active": True, **_LIMITS}
DEPLOYMENT_REQUIRED = ("model_name", "provider", "model")
DEPLOYMENT_DEFAULTS = {
    "api_base": "",
    "api_version": "",
    "region": "",
    "input_cost_per_token": None,
    "output_cost_per_token": None,
    "cached_input_cost_per_token": None,
    "cache_creation_input_token_cost": None,
    "rpm_limit": None,
    "tpm_limit": None,
    "max_parallel_requests": None,
    "weight": 1,
    "priority": 0,
    "timeout_seconds": None,
    "extra": {},
    "enabled": True,
}
# A file's ``models`` is stored as ``members`` (``models`` would shadow Django's module in the model class).
ACCESS_GROUP_DEFAULTS = {"members": [], "description": ""}
MODEL_GROUP_DEFAULTS = {
    "strategy": "simple-shuffle",
    "fallbacks": [],
    "num_retries": None,
    "rpm_capacity": None,
    "tpm_capacity": None,
}

DECIMAL_FIELDS = frozenset(
    {
        "max_budget",
        "soft_budget",
        "session_max_budget",
        "input_cost_per_token",
        "output_cost_per_token",
        "cached_input_cost_per_token",
        "cache_creation_input_token_cost",
    }
)


def desired_values(item: dict, defaults: dict) -> dict:
    """The values a file item asks for, every field present (absent ones at their default)."""
    values = {}
    for name, default in defaults.items():
        value = item.get(name, default)
        if name in DECIMAL_FIELDS and value is not None:
            value = Decimal(str(value))
        values[name] = value
    return values


def comparable(value):
    """Numbers compare by value (1, 1.0 and Decimal("1.000000") are one budget); containers element-wise."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        try:
            return Decimal(str(value)).normalize()
        except InvalidOperation:
            return value
    if isinstance(value, list | tuple):
        return [comparable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): comparable(v) for k, v in value.items()}
    return value


def changed_values(obj, desired: dict) -> dict:
    return {name: value for name, value in desired.items() if comparable(getattr(obj, name)) != comparable(value)}


def exported_value(value):
    """A stored value as the file writes it: decimals as plain numbers when exact, otherwise as text."""
    if isinstance(value, Decimal):
        value = value.normalize()
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else format(value, "f")
    if isinstance(value, list):
        return [exported_value(v) for v in value]
    if isinstance(value, dict):
        return {k: exported_value(v) for k, v in value.items()}
    return value


def non_default(obj, defaults: dict) -> dict:
    """The fields of ``obj`` that differ from what an absent field means, ready to write."""
    out = {}
    for name, default in defaults.items():
        value = getattr(obj, name)
        if comparable(value) != comparable(default):
            out[name] = exported_value(value)
    return out


def shown(value) -> str:
    """A value in the printed diff."""
    value = exported_value(value)
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)
