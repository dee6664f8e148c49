"""Audit trail: services call ``audit_record`` for every change, with the actor and source."""

from __future__ import annotations

from dataclasses import dataclass

from apps.teams.models import AuditEvent

SECRET_FIELDS = {"api_key", "key", "secret", "password", "credentials", "credentials_encrypted", "token"}


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user (or the master key), from which interface and address."""

    user: object | None
    source: str = "api"
    ip_address: str | None = None

    @property
    def label(self) -> str:
        return str(self.user) if self.user is not None else "system"

    @property
    def user_row(self):
        return self.user if getattr(self.user, "pk", None) else None


SYSTEM = Actor(user=None, source="system")


def _clean(changes: dict) -> dict:
    return {k: ("***" if k in SECRET_FIELDS else _jsonable(v)) for k, v in changes.items()}


def _jsonable(value):
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return str(value)


def audit_record(*, actor: Actor, action: str, obj, organization=None, team=None, changes=None) -> AuditEvent:
    return AuditEvent.objects.create(
        actor=actor.user_row,
        actor_label=actor.label[:200],
        organization=organization,
        team=team,
        action=action,
        object_type=obj._meta.model_name,
        object_id=str(obj.pk or ""),
        object_repr=str(obj)[:255],
        changes=_clean(changes or {}),
        source=actor.source,
        ip_address=actor.ip_address,
    )


def actor_from_request(request, source: str) -> Actor:
    from apps.teams.client_ip import client_ip  # never the client-supplied X-Forwarded-For head

    return Actor(user=request.user, source=source, ip_address=client_ip(request))
