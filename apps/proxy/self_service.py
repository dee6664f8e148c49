"""The key holder's self-service API (django-ninja): ``GET /v1/key/info`` with the virtual key itself.

Served by Django (``gateway_project/asgi.py`` routes ``/v1/key/*`` there), so it may use the ORM
directly; it answers only about the key that authenticates the call, and with the same 401 as the
proxy for unknown, revoked, blocked or expired keys.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone
from ninja import NinjaAPI, Schema
from ninja.security import APIKeyHeader, HttpBearer

from apps.keys.hashing import keyed_hash
from apps.keys.models import VirtualKey
from apps.proxy.selectors import key_allowed_models
from apps.spend.selectors import key_usage
from apps.teams.limits import LIMIT_FIELDS

logger = logging.getLogger(__name__)


def _active_key(token: str | None) -> VirtualKey | None:
    if not token:
        return None
    key = (
        VirtualKey.objects.select_related("team", "organization", "user")
        .filter(key_hash=keyed_hash(token), revoked_at__isnull=True, blocked=False)
        .first()
    )
    if key is None or key.team.blocked or key.organization.blocked:
        return None
    if key.user is not None and not key.user.is_active:
        return None
    if key.expires_at and key.expires_at <= timezone.now():
        return None
    return key


class KeyBearer(HttpBearer):
    def authenticate(self, request, token: str) -> VirtualKey | None:
        return _active_key(token)


class KeyHeader(APIKeyHeader):
    param_name = "x-api-key"

    def authenticate(self, request, key: str | None) -> VirtualKey | None:
        return _active_key(key)


class LimitsOut(Schema):
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    max_parallel_requests: int | None = None
    max_budget: Decimal | None = None
    soft_budget: Decimal | None = None
    budget_duration: str | None = None


class KeyInfoOut(Schema):
    alias: str
    prefix: str
    status: str
    team: str
    organization: str
    models: list[str] | None
    expires_at: datetime | None
    last_used_at: datetime | None
    limits: LimitsOut
    effective_limits: LimitsOut
    usage: dict[str, Any]


api = NinjaAPI(
    title="LLM Gateway: key self-service",
    version="1.0.0",
    urls_namespace="key-self-service",
    auth=[KeyBearer(), KeyHeader()],
    docs_url="/docs",
)


def _limits(obj) -> dict[str, Any]:
    values = {name: getattr(obj, name, None) for name in LIMIT_FIELDS}
    values["budget_duration"] = getattr(obj, "budget_duration", "") or None
    return values


def _effective(key: VirtualKey) -> dict[str, Any]:
    """The tightest value of each limit along key -> user -> team -> organization."""
    chain = [key, key.user, key.team, key.organization]
    effective: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        values = [getattr(level, name, None) for level in chain if level is not None]
        values = [v for v in values if v is not None]
        effective[name] = min(values) if values else None
    effective["budget_duration"] = next((lvl.budget_duration for lvl in chain if lvl and lvl.budget_duration), None)
    return effective


def _models(key: VirtualKey) -> list[str] | None:
    """The concrete names the key may call: access groups and patterns resolved as the proxy resolves them."""
    allowed = key_allowed_models(key)
    return sorted(allowed) if allowed is not None else None


@api.get("/info", response=KeyInfoOut, summary="The calling key: limits, allowed models, usage and budget left")
def key_info(request):
    key: VirtualKey = request.auth
    try:
        usage = key_usage(key.pk)
    except Exception:  # the ledger may be unavailable; the key's own facts still answer
        logger.exception("key usage unavailable for key %s", key.pk)
        usage = {}
    return {
        "alias": key.alias,
        "prefix": key.prefix,
        "status": key.status,
        "team": key.team.name,
        "organization": key.organization.name,
        "models": _models(key),
        "expires_at": key.expires_at,
        "last_used_at": key.last_used_at,
        "limits": _limits(key),
        "effective_limits": _effective(key),
        "usage": usage,
    }
