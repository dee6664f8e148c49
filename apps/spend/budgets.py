"""Budgets of every scope as configured now, looked up in bulk for the alert and usage code."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from apps.keys.models import VirtualKey
from apps.teams.models import Customer, Organization, Team, User


@dataclass(frozen=True, slots=True)
class Budget:
    max_budget: Decimal | None
    soft_budget: Decimal | None
    duration: str
    label: str
    organization_id: int | None = None
    team_id: int | None = None
    user_id: int | None = None

    def expects_window(self, window_id: str) -> bool:
        """Only the window of the scope's current duration counts (``all`` without one)."""
        if not self.duration:
            return window_id == "all"
        return window_id.startswith(f"{self.duration}:")


def _decimal(value) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def budgets_for(pairs: set[tuple[str, str]]) -> dict[tuple[str, str], Budget]:
    """``{(scope, scope_id): Budget}`` for the pairs that exist; a few queries whatever their number."""
    wanted: dict[str, set[str]] = {}
    for scope, scope_id in pairs:
        wanted.setdefault(scope, set()).add(scope_id)
    found: dict[tuple[str, str], Budget] = {}

    def ints(values: set[str]) -> set[int]:
        return {int(v) for v in values if v.isdigit()}

    for key in VirtualKey.objects.filter(pk__in=ints(wanted.get("key", set()))):
        found[("key", str(key.pk))] = Budget(
            key.max_budget,
            key.soft_budget,
            key.budget_duration,
            f"key {key}",
            key.organization_id,
            key.team_id,
            key.user_id,
        )
    for user in User.objects.filter(pk__in=ints(wanted.get("user", set()))):
        found[("user", str(user.pk))] = Budget(
            user.max_budget, user.soft_budget, user.budget_duration, f"user {user.username}", None, None, user.pk
        )
    for team in Team.objects.filter(pk__in=ints(wanted.get("team", set()))).select_related("organization"):
        found[("team", str(team.pk))] = Budget(
            team.max_budget, team.soft_budget, team.budget_duration, f"team {team}", team.organization_id, team.pk
        )
    for org in Organization.objects.filter(pk__in=ints(wanted.get("organization", set()))):
        found[("organization", str(org.pk))] = Budget(
            org.max_budget, org.soft_budget, org.budget_duration, f"organization {org}", org.pk
        )
    for customer in Customer.objects.filter(pk__in=ints(wanted.get("customer", set()))):
        found[("customer", str(customer.pk))] = Budget(
            customer.max_budget,
            customer.soft_budget,
            customer.budget_duration,
            f"customer {customer.external_id}",
            customer.organization_id,
        )
    for scope_id in wanted.get("model", set()):
        owner, _, rest = scope_id.partition(":")
        owner_id, _, model = rest.partition(":")
        holder = None
        if owner == "key" and owner_id.isdigit():
            holder = VirtualKey.objects.filter(pk=int(owner_id)).first()
        elif owner == "team" and owner_id.isdigit():
            holder = Team.objects.filter(pk=int(owner_id)).first()
        limits = (holder.model_limits or {}).get(model) if holder is not None else None
        if isinstance(limits, dict):
            found[("model", scope_id)] = Budget(
                _decimal(limits.get("max_budget")),
                _decimal(limits.get("soft_budget")),
                str(limits.get("budget_duration") or ""),
                f"{owner} {holder} model {model}",
                holder.organization_id,
                holder.team_id if owner == "key" else holder.pk,
                getattr(holder, "user_id", None),
            )
    return found
