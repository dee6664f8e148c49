"""The limit and budget fields shared by every tenant level (organization, team, user, key, customer)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

LIMIT_FIELDS = ("rpm_limit", "tpm_limit", "max_parallel_requests", "max_budget", "soft_budget")
# Per-agent-session caps on teams and keys; a key's cap never exceeds its team's.
SESSION_CAPS = ("session_max_budget", "session_max_iterations")


class BudgetDuration(models.TextChoices):
    HOUR = "1h", "1 hour"
    DAY = "1d", "1 day"
    WEEK = "7d", "7 days"
    THIRTY_DAYS = "30d", "30 days"
    MONTH = "1mo", "calendar month"


class LimitFields(models.Model):
    """Null means "no limit at this level"; the effective limit is the tightest along the chain."""

    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute.")
    tpm_limit = models.PositiveBigIntegerField(null=True, blank=True, help_text="Tokens per minute.")
    max_parallel_requests = models.PositiveIntegerField(null=True, blank=True)
    max_budget = models.DecimalField(
        max_digits=14,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Hard budget in USD per budget window.",
    )
    soft_budget = models.DecimalField(
        max_digits=14,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="Alert threshold in USD per budget window.",
    )
    budget_duration = models.CharField(max_length=4, choices=BudgetDuration.choices, blank=True, default="")

    class Meta:
        abstract = True

    def limit_values(self) -> dict:
        return {name: getattr(self, name) for name in LIMIT_FIELDS}


def check_within(
    values: dict,
    parent,
    *,
    parent_label: str,
    models_outside: Callable[[list[str], list[str]], list[str]] | None = None,
) -> dict[str, str]:
    """Field errors where ``values`` would grant more than ``parent`` has (limits, budget, models).

    ``models_outside(child, parent)`` names the child's models the parent's list does not allow; the
    callers pass the access-group-aware one (``apps.teams.access.outside``), plain set difference otherwise.
    """
    errors: dict[str, str] = {}
    for name in LIMIT_FIELDS:
        parent_value = getattr(parent, name, None)
        child_value = values.get(name)
        if parent_value is not None and child_value is not None and child_value > parent_value:
            errors[name] = f"cannot exceed the {parent_label}'s {name} ({parent_value})."
    parent_models = getattr(parent, "allowed_models", None) or []
    child_models = values.get("allowed_models") or []
    if parent_models:
        if models_outside is None:
            outside = sorted(set(child_models) - set(parent_models))
        else:
            outside = models_outside(child_models, parent_models)
        if outside:
            errors["models"] = f"not allowed for the {parent_label}: {', '.join(outside)}."
    return errors


def model_limits_problem(value) -> str | None:
    """Why a ``model_limits`` table is malformed, or None.

    Shape: ``{"gpt-4o": {"rpm_limit": 10, "tpm_limit": 1000, "max_budget": 5, "budget_duration": "1d"}}``.
    The hot path reads it without further checks, so a bad shape must never be stored.
    """
    if not isinstance(value, dict):
        return 'must be an object: {"model": {"rpm_limit": 10, ...}}.'
    for model, limits in value.items():
        if not isinstance(limits, dict):
            return f"{model}: must be an object of limits."
        unknown = sorted(set(limits) - {*LIMIT_FIELDS, "budget_duration"})
        if unknown:
            return f"{model}: unknown limit(s) {', '.join(unknown)}."
        for name, number in limits.items():
            if name == "budget_duration":
                if number not in BudgetDuration.values and number not in ("", None):
                    return f"{model}: budget_duration must be one of {', '.join(BudgetDuration.values)}."
                continue
            if number is None:
                continue
            if isinstance(number, bool) or not isinstance(number, int | float | str):
                return f"{model}: {name} must be a number."
            try:
                parsed = Decimal(str(number))
            except ArithmeticError:
                return f"{model}: {name} must be a number."
            if not parsed.is_finite() or parsed < 0:
                return f"{model}: {name} must be a non-negative number."
            if name in ("rpm_limit", "tpm_limit", "max_parallel_requests") and not isinstance(number, int):
                return f"{model}: {name} must be a whole number."
    return None
