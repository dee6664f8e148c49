"""HTTP JSON sink: records POSTed as ``{"records": [...]}``, signed with HMAC-SHA256 over timestamp and body.

Headers (docs/operations.md shows how to verify them):
  X-Gateway-Timestamp: <unix seconds when sent>
  X-Gateway-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>
  X-Gateway-Delivery:  <hex id of the batch: the same on every retry of one batch, for deduplication>

The timestamp is inside the signed text, so a receiver that refuses timestamps older than a few minutes
refuses a replayed request even though its signature is valid.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import urllib3

from apps.sinks.transports import DeliveryError, SinkTarget, http_error

USER_AGENT = "llm-gateway-log-sink/1"


def body_of(records: list[bytes]) -> bytes:
    return b'{"records":[' + b",".join(records) + b"]}"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def send(target: SinkTarget, records: list[bytes], pool: urllib3.PoolManager) -> str:
    body = body_of(records)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Gateway-Timestamp": timestamp,
        "X-Gateway-Delivery": hashlib.sha256(body).hexdigest()[:32],
    }
    if target.secret:  # always set through the admin; a row made by hand may lack it
        headers["X-Gateway-Signature"] = signature(target.secret, timestamp, body)
    try:
        response = pool.request(
            "POST", target.url, body=body, headers=headers, timeout=target.timeout, retries=False, redirect=False
        )
    except urllib3.exceptions.HTTPError as exc:
        raise http_error(exc) from None
    if not 200 <= response.status < 300:
        raise DeliveryError(f"HTTP {response.status} from the sink's endpoint")
    return ""
