"""Provider credentials at rest: Fernet with rotation (MultiFernet, newest key first).

Keys come from ``GATEWAY_ENCRYPTION_KEYS``; without it, one key is derived from the Django secret
(embedded mode). To rotate: put a new key first, keep the old ones, run
``manage.py rotate_credentials``, then drop the old keys.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


@lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...], fallback_secret: str) -> MultiFernet:
    if not keys:
        derived = base64.urlsafe_b64encode(hashlib.sha256(("fernet:" + fallback_secret).encode()).digest())
        keys = (derived.decode(),)
    return MultiFernet([Fernet(k.encode() if isinstance(k, str) else k) for k in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.GATEWAY_ENCRYPTION_KEYS), settings.SECRET_KEY)


def encrypt(plaintext: str) -> str:
    if not plaintext:
        return ""
    return _current().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _current().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("credential cannot be decrypted with the configured GATEWAY_ENCRYPTION_KEYS") from exc


def rotate(token: str) -> str:
    """The same plaintext, encrypted with the newest key."""
    if not token:
        return ""
    try:
        return _current().rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("credential cannot be decrypted with the configured GATEWAY_ENCRYPTION_KEYS") from exc
