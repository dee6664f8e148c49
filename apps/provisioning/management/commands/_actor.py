"""Who a config command acts as: the operator (a superuser) by default, or ``--actor USERNAME``."""

from __future__ import annotations

from django.core.management.base import CommandError

from apps.provisioning.services import OPERATOR
from apps.teams.audit import Actor
from apps.teams.models import User


def actor_for(username: str | None) -> Actor:
    if not username:
        return OPERATOR
    user = User.objects.filter(username=username, is_active=True).first()
    if user is None:
        raise CommandError(f"--actor: no active user {username!r}.")
    return Actor(user=user, source="config")
