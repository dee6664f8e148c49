"""DRF authentication: a bearer JWT access token from the configured OpenID provider (CI, service accounts).

Placed before ``ApiTokenAuthentication`` (which refuses any bearer it does not know): a bearer that is
not shaped like a JWT is left to it. A JWT is verified (``apps.sso.jwks``) and mapped to a user by the
same mapping rules as people: its groups claim, and "client" rules on its ``azp``/``client_id``. A
token no rule grants anything is a 403; any invalid token the same 401 "Invalid token.".
"""

from __future__ import annotations

import logging
from datetime import timedelta
from functools import cache

from django.conf import settings
from rest_framework import authentication, exceptions

from apps.sso import schema  # noqa: F401  (registers the bearer's OpenAPI description)
from apps.sso.claims import claims_read
from apps.sso.jwks import JwksCache, TokenInvalid, access_token_verify
from apps.sso.services import SsoRefused, sso_token_user

log = logging.getLogger("gateway.sso")


@cache
def _jwks() -> JwksCache:
    """One key cache per process (the provider is asked only on a new key id)."""
    return JwksCache(issuer=settings.OIDC_ISSUER, timeout=settings.OIDC_HTTP_TIMEOUT_SECONDS)


def _looks_like_jwt(token: str) -> bool:
    return token.startswith("eyJ") and token.count(".") == 2


class OidcBearerAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not settings.OIDC_ISSUER or not settings.OIDC_API_AUDIENCE or not header.lower().startswith("bearer "):
            return None
        token = header[7:].strip()
        if not _looks_like_jwt(token):
            return None
        try:
            raw = access_token_verify(token, cache=_jwks(), audience=settings.OIDC_API_AUDIENCE)
        except TokenInvalid as exc:
            log.info("api bearer jwt refused: %s", exc)
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        claims = claims_read(raw, groups_claim=settings.OIDC_GROUPS_CLAIM)
        if not claims.subject and claims.client_id:
            claims = claims.__class__(**{**claims.__dict__, "subject": claims.client_id})
        try:
            user = sso_token_user(claims=claims, resync_after=timedelta(seconds=settings.OIDC_API_RESYNC_SECONDS))
        except SsoRefused as exc:
            raise exceptions.PermissionDenied(str(exc)) from None
        if user is None:
            raise exceptions.PermissionDenied("No single sign-on rule grants this token any access.")
        return user, raw

    def authenticate_header(self, request) -> str:
        return "Bearer"
