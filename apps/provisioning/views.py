"""The config file's JSON Schema over HTTP, for editors (``# yaml-language-server: $schema=...``) and CI."""

from __future__ import annotations

from django.http import JsonResponse
from django.views.decorators.http import require_GET

from apps.provisioning.schema import CONFIG_SCHEMA


@require_GET
def config_schema(request):
    # Public on purpose: the format is documentation, it holds no tenant data and editors fetch it unauthenticated.
    return JsonResponse(CONFIG_SCHEMA, json_dumps_params={"indent": 2})
