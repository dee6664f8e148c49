from django.apps import AppConfig

from apps.teams.departures import Departure, departure_hook_register


class KeysConfig(AppConfig):
    name = "apps.keys"
    label = "keys"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Out of a team (or the organization), a person's keys there stop: teams calls this hook on every
        # departure (apps/teams/departures.py) without importing keys.
        departure_hook_register(block_departed_keys)


def block_departed_keys(departure: Departure) -> dict[str, int]:
    # Imported here: this module is loaded while the app registry is being populated, services import models.
    from apps.keys.services import keys_suspend_for_departure

    suspended = keys_suspend_for_departure(
        actor=departure.actor,
        user=departure.user,
        organization=departure.organization,
        team=departure.team,
        reason=departure.reason,
    )
    return {"keys_suspended": suspended}
