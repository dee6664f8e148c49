"""What else happens when a person leaves a team or an organization: an explicit list of hooks.

Teams is the ground floor and knows nothing of the apps above it, yet a departure has consequences
there: the keys app blocks the person's keys in what they left. So ``membership_delete`` and
``user_offboard`` (apps/teams/services.py) call every hook registered here, and the keys app registers
its own in ``KeysConfig.ready()``.

Not a Django signal on purpose: a hook runs inside the removal's transaction, in registration order; one
that raises (``PermissionDenied``: the actor may not block every key) rolls the whole removal back; and
each hook reports what it did (``{"keys_suspended": 2}``), which the offboarding answer shows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from apps.teams.audit import Actor
    from apps.teams.models import Organization, Team, User


@dataclass(frozen=True)
class Departure:
    actor: Actor
    user: User
    organization: Organization
    team: Team | None  # None: they left the whole organization
    reason: str


DepartureHook = Callable[[Departure], dict[str, int]]

# Filled once at startup by the AppConfigs' ready(), read on every departure.
_hooks: list[DepartureHook] = []


def departure_hook_register(hook: DepartureHook) -> None:
    """Add ``hook`` (once: registering it again is a no-op, so a repeated ``ready()`` does not run it twice)."""
    if hook not in _hooks:
        _hooks.append(hook)


def departure_hooks() -> tuple[DepartureHook, ...]:
    return tuple(_hooks)


def departure_consequences(departure: Departure) -> dict[str, int]:
    """Run every hook for ``departure`` (inside the caller's transaction); their counts, added up by name."""
    done: dict[str, int] = {}
    for hook in _hooks:
        for name, count in hook(departure).items():
            done[name] = done.get(name, 0) + count
    return done
