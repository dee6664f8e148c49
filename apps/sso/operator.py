"""The actor single sign-on writes as: memberships it grants or removes are audited under its name."""

from __future__ import annotations

from apps.teams.audit import Actor


class SingleSignOn:
    """The identity provider's word, applied by the gateway: a superuser without a database row.

    Like the master key and the config operator, it passes the services' ``require`` checks; what it may
    grant is bounded by the mapping rules, which only superusers and organization owners edit.
    """

    pk = None
    id = None
    username = "single-sign-on"
    is_active = True
    is_staff = True
    is_superuser = True
    is_authenticated = True
    is_anonymous = False

    def __str__(self) -> str:
        return "single sign-on"


def sso_actor(ip_address: str | None = None) -> Actor:
    return Actor(user=SingleSignOn(), source="sso", ip_address=ip_address)
