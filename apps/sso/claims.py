"""What the identity provider said about a person, read from an ID token (or an access token) once.

Pure functions: no database, no settings import at call sites beyond what is passed in, so the rules
(which claim holds the groups, which e-mail domains may sign in) are tested on plain dictionaries.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claims:
    issuer: str
    subject: str
    email: str = ""
    email_verified: bool = False
    given_name: str = ""
    family_name: str = ""
    groups: tuple[str, ...] = ()
    # A service account's client (``azp`` or ``client_id``): matched by "client" mapping rules.
    client_id: str = ""


def claim_path(claims: dict, path: str):
    """``claims[path]``, where a dotted path reaches into objects (Keycloak's ``realm_access.roles``).

    A key that itself contains dots (Auth0's namespaced ``https://example.com/groups``) is tried whole first.
    """
    if path in claims:
        return claims[path]
    value = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def groups_from(value) -> tuple[str, ...]:
    """A groups claim as a sorted tuple: a list of names, or one string of names separated by spaces or commas."""
    if value is None:
        return ()
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, list | tuple):
        items = [str(item) for item in value if isinstance(item, str | int)]
    else:
        return ()
    return tuple(sorted({item.strip() for item in items if item.strip()}))


def claims_read(raw: dict, *, groups_claim: str) -> Claims:
    """The claims the gateway uses, from a verified token's payload (or the userinfo answer)."""
    verified = raw.get("email_verified")
    return Claims(
        issuer=str(raw.get("iss", "")),
        subject=str(raw.get("sub", "")),
        email=str(raw.get("email") or "").strip().lower(),
        email_verified=verified is True or str(verified).lower() == "true",
        given_name=str(raw.get("given_name") or "")[:150],
        family_name=str(raw.get("family_name") or "")[:150],
        groups=groups_from(claim_path(raw, groups_claim)),
        client_id=str(raw.get("azp") or raw.get("client_id") or ""),
    )


def email_domain_allowed(email: str, domains: list[str]) -> bool:
    """No list: any address. A list: the address's domain (after the last @) is one of them, exactly."""
    if not domains:
        return True
    if "@" not in email:
        return False
    return email.rsplit("@", 1)[1].lower() in {domain.lower().lstrip("@") for domain in domains}
