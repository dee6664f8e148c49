"""Secrets are stored as a display prefix plus an HMAC-SHA256 keyed with the server-side pepper."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings

KEY_PREFIX = "sk-gw-"
TOKEN_PREFIX = "gwt_"


def keyed_hash(secret: str, pepper: str | None = None) -> str:
    pepper = pepper if pepper is not None else settings.GATEWAY_SECRET_KEY
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()


def generate_secret(prefix: str = KEY_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


def display_prefix(secret: str) -> str:
    """What the admin shows forever after: enough to recognise a key, never enough to use it."""
    return f"{secret[: len(KEY_PREFIX) + 4]}...{secret[-4:]}"
