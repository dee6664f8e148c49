"""DRF authentication for the provisioning API: the master key, per-user API tokens (hashed)."""

from __future__ import annotations

import hmac
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import authentication, exceptions

from apps.keys.hashing import keyed_hash
from apps.keys.models import ApiToken

LAST_USED_GRANULARITY = timedelta(minutes=1)


def _bearer(request) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header.lower().startswith("bearer "):
        return None
    return header[7:].strip() or None


class MasterKeyUser:
    """The operator holding GATEWAY_MASTER_KEY: a superuser without a database row."""

    pk = None
    id = None
    username = "master-key"
    is_active = True
    is_staff = True
    is_superuser = True
    is_authenticated = True
    is_anonymous = False

    def __str__(self) -> str:
        return "master key"

    def has_perm(self, *args, **kwargs) -> bool:
        return True


class MasterKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        token = _bearer(request)
        master = settings.GATEWAY_MASTER_KEY
        if not token or not master or not hmac.compare_digest(token.encode(), master.encode()):
            return None
        return MasterKeyUser(), None

    def authenticate_header(self, request) -> str:
        return "Bearer"


class ApiTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        token = _bearer(request)
        if not token:
            return None
        row = ApiToken.objects.select_related("user").filter(token_hash=keyed_hash(token)).first()
        now = timezone.now()
        # One message for unknown, wrong, expired and inactive: nothing to learn by probing.
        if row is None or not row.user.is_active or (row.expires_at and row.expires_at <= now):
            raise exceptions.AuthenticationFailed("Invalid token.")
        if row.last_used_at is None or now - row.last_used_at > LAST_USED_GRANULARITY:
            ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
        return row.user, row

    def authenticate_header(self, request) -> str:
        return "Bearer"
