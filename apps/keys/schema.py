"""OpenAPI descriptions of the API's bearer authentications (imported by apps.keys.api to register them)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class MasterKeyScheme(OpenApiAuthenticationExtension):
    target_class = "apps.keys.authentication.MasterKeyAuthentication"
    name = "masterKey"
    priority = 1

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "GATEWAY_MASTER_KEY: acts as a superuser."}


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "apps.keys.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token (gwt_...).",
        }
