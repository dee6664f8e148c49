"""MCP session ids (``Mcp-Session-Id``): signed, not stored, so any worker of any machine accepts them.

A session id names the key that opened it and the protocol version negotiated at ``initialize``. A
session presented with another key is unknown (404, as the specification says for an expired one), so
a stolen session id is useless without its key; a revoked key is refused before its session is looked at.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

PREFIX = "mcps1."


def _sign(secret: str, payload: str) -> str:
    digest = hmac.new(("mcp-session:" + secret).encode(), payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def _holder(key_id: int | None) -> str:
    return "m" if key_id is None else str(key_id)


def session_issue(*, secret: str, key_id: int | None, protocol_version: str) -> str:
    nonce = base64.urlsafe_b64encode(os.urandom(12)).decode()
    payload = f"{_holder(key_id)}.{protocol_version}.{nonce}"
    return f"{PREFIX}{payload}.{_sign(secret, payload)}"


def session_check(token: str, *, secret: str, key_id: int | None) -> str | None:
    """The session's protocol version, or None when ``token`` is not a session of this key."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    payload, _, signature = token[len(PREFIX) :].rpartition(".")
    if not payload or not hmac.compare_digest(signature, _sign(secret, payload)):
        return None
    holder, _, rest = payload.partition(".")
    version, _, _nonce = rest.partition(".")
    return version if holder == _holder(key_id) and version else None
