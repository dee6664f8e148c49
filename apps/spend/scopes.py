"""Which budget windows one ledger row charges: the same scope ids and window ids the limiters use.

Scope ids (as ``apps.proxy.auth`` and ``apps.ratelimit.lookups`` build them): the pk as text for key,
user, team, organization and customer (the ``Customer`` row of the event's organization and external
id; none without a row); ``"key:<key id>:<model>"`` and ``"team:<team id>:<model>"`` for per-model
budgets, only where the key's/team's ``model_limits`` name the model, with that entry's own
``budget_duration``. The window comes from the scope's ``budget_duration`` in the organization's time
zone; without a duration it is the lifetime window ``"all"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from apps.keys.models import VirtualKey
from apps.spend.windows import DURATIONS, Window, lifetime_window, window_for
from apps.teams.models import Customer, Organization, Team, User


@dataclass(frozen=True, slots=True)
class ScopeWindow:
    scope: str
    scope_id: str
    window: Window
    organization_id: int | None = None
    team_id: int | None = None
    user_id: int | None = None


_SLOT_SECONDS = 900


def window_of(duration: str, at: datetime, time_zone: str) -> Window:
    """``window_for`` for ingestion: rows of one 15-minute UTC slot share the answer.

    Every window boundary (local midnights and hours, in any zone's offset, all multiples of 15
    minutes) falls on a slot edge, so the window of the slot's start is the window of ``at``.
    """
    if duration not in DURATIONS:
        return lifetime_window()
    return _slot_window(duration, int(at.timestamp()) // _SLOT_SECONDS, time_zone)


@lru_cache(maxsize=4096)
def _slot_window(duration: str, slot: int, time_zone: str) -> Window:
    at = datetime.fromtimestamp(slot * _SLOT_SECONDS, tz=UTC)
    try:
        return window_for(duration, at, time_zone)
    except (KeyError, ValueError):  # an unknown time zone name: count in UTC rather than not at all
        return window_for(duration, at, "UTC")


class ScopeDirectory:
    """Budget durations, time zones and per-model limits of the tenants a batch touches (a few queries)."""

    def __init__(self, rows: Iterable) -> None:
        rows = list(rows)
        org_ids = {r.organization_id for r in rows if r.organization_id}
        team_ids = {r.team_id for r in rows if r.team_id}
        key_ids = {r.key_id for r in rows if r.key_id}
        user_ids = {r.user_id for r in rows if r.user_id}
        customers = {(r.organization_id, r.customer_id) for r in rows if r.customer_id and r.organization_id}
        self.orgs = {
            pk: (duration, tz)
            for pk, duration, tz in Organization.objects.filter(pk__in=org_ids).values_list(
                "pk", "budget_duration", "time_zone"
            )
        }
        self.teams = {
            pk: (duration, limits or {})
            for pk, duration, limits in Team.objects.filter(pk__in=team_ids).values_list(
                "pk", "budget_duration", "model_limits"
            )
        }
        self.keys = {
            pk: (duration, limits or {})
            for pk, duration, limits in VirtualKey.objects.filter(pk__in=key_ids).values_list(
                "pk", "budget_duration", "model_limits"
            )
        }
        self.users = dict(User.objects.filter(pk__in=user_ids).values_list("pk", "budget_duration"))
        self.customers: dict[tuple[int, str], tuple[int, str]] = {}
        self._memo: dict[tuple, list[ScopeWindow]] = {}
        if customers:
            org_filter = {org for org, _ in customers}
            ext_filter = {ext for _, ext in customers}
            for pk, org, ext, duration in Customer.objects.filter(
                organization_id__in=org_filter, external_id__in=ext_filter
            ).values_list("pk", "organization_id", "external_id", "budget_duration"):
                self.customers[(org, ext)] = (pk, duration)

    def time_zone(self, organization_id: int | None) -> str:
        return self.orgs.get(organization_id, ("", "UTC"))[1] or "UTC"

    def scopes(self, row) -> list[ScopeWindow]:
        """The windows ``row`` charges. Rows of one tenant, model and 15-minute slot share the answer."""
        slot = int(row.created_at.timestamp()) // _SLOT_SECONDS
        memo_key = (row.key_id, row.user_id, row.team_id, row.organization_id, row.customer_id, row.model, slot)
        found = self._memo.get(memo_key)
        if found is None:
            found = self._memo[memo_key] = self._scopes(row)
        return found

    def _scopes(self, row) -> list[ScopeWindow]:
        at = row.created_at
        tz = self.time_zone(row.organization_id)
        org, team, user = row.organization_id, row.team_id, row.user_id
        found: list[ScopeWindow] = []
        if row.key_id:
            duration, limits = self.keys.get(row.key_id, ("", {}))
            found.append(ScopeWindow("key", str(row.key_id), window_of(duration, at, tz), org, team, user))
            model_limit = limits.get(row.model) if isinstance(limits, dict) else None
            if isinstance(model_limit, dict):
                found.append(
                    ScopeWindow(
                        "model",
                        f"key:{row.key_id}:{row.model}",
                        window_of(str(model_limit.get("budget_duration") or ""), at, tz),
                        org,
                        team,
                        user,
                    )
                )
        if user:
            duration = self.users.get(user, "")
            found.append(ScopeWindow("user", str(user), window_of(duration, at, tz), org, None, user))
        if team:
            duration, limits = self.teams.get(team, ("", {}))
            found.append(ScopeWindow("team", str(team), window_of(duration, at, tz), org, team))
            model_limit = limits.get(row.model) if isinstance(limits, dict) else None
            if isinstance(model_limit, dict):
                found.append(
                    ScopeWindow(
                        "model",
                        f"team:{team}:{row.model}",
                        window_of(str(model_limit.get("budget_duration") or ""), at, tz),
                        org,
                        team,
                    )
                )
        if org:
            duration = self.orgs.get(org, ("", "UTC"))[0]
            found.append(ScopeWindow("organization", str(org), window_of(duration, at, tz), org))
        customer = self.customers.get((org, row.customer_id)) if row.customer_id else None
        if customer is not None:
            pk, duration = customer
            found.append(ScopeWindow("customer", str(pk), window_of(duration, at, tz), org))
        return found


def scopes_for_events(rows: list) -> Iterator[tuple[object, list[ScopeWindow]]]:
    directory = ScopeDirectory(rows)
    for row in rows:
        yield row, directory.scopes(row)
