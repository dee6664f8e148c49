"""Opaque, signed ids for files and batches created through the gateway.

The upstream's own id is wrapped with the deployment that holds it, the owning organization, and
for batch input files the request count and token estimate the batch limiter charges. Signed with
GATEWAY_SECRET_KEY, so a client can neither point an id at another tenant's upstream object nor
shrink what its batch is charged; stateless, so every worker understands every id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import orjson

from apps.proxy.context import RequestContext
from apps.proxy.errors import GatewayError

PREFIXES = {"file": "file-gw", "batch": "batch_gw"}
FILE_FIELDS = ("input_file_id", "output_file_id", "error_file_id")


@dataclass(frozen=True, slots=True)
class Handle:
    kind: str
    deployment_id: int
    upstream_id: str
    organization_id: int | None
    model: str = ""
    requests: int = 0
    prompt_tokens: int = 0
    max_tokens: int = 0


def _sign(secret: str, payload: bytes) -> str:
    return hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()[:20]


def wrap(handle: Handle, secret: str) -> str:
    payload = orjson.dumps(
        [
            handle.deployment_id,
            handle.upstream_id,
            handle.organization_id,
            handle.model,
            handle.requests,
            handle.prompt_tokens,
            handle.max_tokens,
        ]
    )
    encoded = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return f"{PREFIXES[handle.kind]}-{encoded}.{_sign(secret, handle.kind.encode() + payload)}"


def unwrap(kind: str, value: str, secret: str, *, organization_id: int | None, is_master: bool) -> Handle:
    """The handle behind ``value``; 404 for anything forged, foreign or malformed (nothing to probe)."""
    not_found = GatewayError(404, f"No such {kind}: '{value[:80]}'.", code="not_found", kind="not_found")
    prefix = PREFIXES[kind] + "-"
    if not isinstance(value, str) or not value.startswith(prefix) or "." not in value:
        raise not_found
    encoded, _, signature = value[len(prefix) :].rpartition(".")
    try:
        payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except ValueError:
        raise not_found from None
    # The signature first: nothing unsigned is ever parsed.
    if not hmac.compare_digest(signature, _sign(secret, kind.encode() + payload)):
        raise not_found
    try:
        dep_id, upstream_id, org_id, model, requests, prompt, max_tokens = orjson.loads(payload)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise not_found from None
    if not is_master and org_id != organization_id:
        raise not_found
    return Handle(kind, int(dep_id), str(upstream_id), org_id, str(model), int(requests), int(prompt), int(max_tokens))


def client_handle(kind: str, value: str, secret: str, ctx: RequestContext) -> Handle:
    """The signed handle behind a client-given id; 404 for anything forged, foreign or malformed.

    Ids are ASCII by construction: anything else is refused here, before the signature comparison
    (``hmac.compare_digest`` raises on non-ASCII text, which would surface as a gateway error).
    """
    if not value.isascii():
        raise GatewayError(404, f"No such {kind}.", code="not_found", kind="not_found")
    return unwrap(kind, value, secret, organization_id=ctx.key.organization_id, is_master=ctx.key.is_master)


def wrap_batch(obj: dict[str, Any], handle: Handle, secret: str) -> dict[str, Any]:
    """An upstream batch object as the client sees it: its id and its files' ids are signed handles
    that keep the input file's organization, model and counts."""
    obj = dict(obj)
    obj["id"] = wrap(
        Handle(
            "batch",
            handle.deployment_id,
            str(obj.get("id")),
            handle.organization_id,
            handle.model,
            handle.requests,
            handle.prompt_tokens,
            handle.max_tokens,
        ),
        secret,
    )
    for name in FILE_FIELDS:
        if obj.get(name):
            obj[name] = wrap(
                Handle("file", handle.deployment_id, str(obj[name]), handle.organization_id, handle.model), secret
            )
    return obj
