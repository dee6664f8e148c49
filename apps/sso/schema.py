"""OpenAPI description of the OpenID bearer (registered by importing it: apps.sso.authentication does)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class OidcBearerScheme(OpenApiAuthenticationExtension):
    target_class = "apps.sso.authentication.OidcBearerAuthentication"
    name = "oidcAccessToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token from the configured OpenID provider (OIDC_ISSUER) for OIDC_API_AUDIENCE.",
        }
