"""The OpenID Connect client (Authlib), built once per process from settings.

Authlib keeps the provider's discovery document and its JWKS on the client object, so one client per
process means one discovery fetch, and a JWKS fetch only when an ID token names a key id it has not
seen (key rotation). Settings are read once, here, not in the views.
"""

from __future__ import annotations

from functools import cache

import requests
from authlib.integrations.django_client import DjangoOAuth2App, OAuth
from django.conf import settings


class SsoUnavailable(Exception):
    """Single sign-on is not configured, or the provider's discovery document cannot be trusted."""


def sso_enabled() -> bool:
    return bool(settings.OIDC_ISSUER and settings.OIDC_CLIENT_ID)


@cache
def oidc_client() -> DjangoOAuth2App:
    if not sso_enabled():
        raise SsoUnavailable("single sign-on is not configured (OIDC_ISSUER, OIDC_CLIENT_ID)")
    registry = OAuth()
    return registry.register(
        name="gateway",
        client_id=settings.OIDC_CLIENT_ID,
        client_secret=settings.OIDC_CLIENT_SECRET,
        server_metadata_url=f"{settings.OIDC_ISSUER}/.well-known/openid-configuration",
        client_kwargs={
            "scope": " ".join(settings.OIDC_SCOPES),
            "code_challenge_method": "S256",  # PKCE, also for a confidential client
            "timeout": settings.OIDC_HTTP_TIMEOUT_SECONDS,
        },
    )


def provider_metadata() -> dict:
    """The discovery document, refused unless it names the configured issuer (OpenID Connect Discovery 4.3)."""
    client = oidc_client()
    try:
        metadata = client.load_server_metadata()
    except (requests.RequestException, ValueError) as exc:  # unreachable, an error status, or not JSON
        reason = type(exc).__name__
        raise SsoUnavailable(f"the identity provider's discovery document could not be read ({reason})") from exc
    named = metadata.get("issuer")
    if named != settings.OIDC_ISSUER:
        raise SsoUnavailable(f"the identity provider says its issuer is {named!r}, not {settings.OIDC_ISSUER!r}")
    return metadata


def id_token_claims_options() -> dict:
    """``iss`` must be the configured issuer (not merely what discovery says); Authlib checks aud, exp, nonce."""
    return {"iss": {"essential": True, "values": [settings.OIDC_ISSUER]}}
