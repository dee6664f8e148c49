"""Secrets never leave in a sink record: by the name of a field, and by the look of a value.

The fixed ledger columns hold no secret by design; this is the net under everything free-form a record
carries (metadata) and under any text a person typed (a key alias that is really a key). Names match
as whole words ("key_alias" is a name, "api_key" is a secret); values match the shapes of the secrets
the gateway and its providers hand out.
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[REDACTED]"

# Field names whose value is a secret, compared as a whole after lowering and dropping - and _.
SECRET_NAMES = frozenset(
    {
        "apikey",
        "key",
        "secret",
        "secretkey",
        "clientsecret",
        "password",
        "passwd",
        "token",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "authorization",
        "proxyauthorization",
        "xapikey",
        "credential",
        "credentials",
        "cookie",
        "setcookie",
        "awssecretaccesskey",
        "secretaccesskey",
        "privatekey",
        "signature",
    }
)

# Values shaped like a secret, wherever they appear: bearer credentials, the gateway's and providers'
# keys (sk-..., sk-gw-..., sk-ant-..., pk-lf-/sk-lf-...), AWS access key ids, Google API keys, JWTs.
SECRET_VALUE = re.compile(
    r"(?i)\b(?:bearer|basic)\s+[a-z0-9._~+/=-]{8,}"
    r"|\b(?:sk|pk|rk)-[a-z0-9_-]{12,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\bAIza[0-9A-Za-z_-]{30,}"
    r"|\beyJ[a-zA-Z0-9_-]{10,}\.[a-zA-Z0-9_-]{10,}\.[a-zA-Z0-9_-]{10,}"
)

_MAX_DEPTH = 20


def is_secret_name(name: object) -> bool:
    return isinstance(name, str) and name.lower().replace("-", "").replace("_", "") in SECRET_NAMES


def redact_text(value: str) -> str:
    return SECRET_VALUE.sub(REDACTED, value) if value else value


def redact(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` with secret-named fields and secret-looking strings replaced by ``REDACTED``."""
    if isinstance(value, str):
        return redact_text(value)
    if _depth >= _MAX_DEPTH:
        return REDACTED  # nothing legitimate nests this deep; refusing is cheaper than guessing
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_name(k) else redact(v, _depth + 1)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, _depth + 1) for v in value]
    return value
