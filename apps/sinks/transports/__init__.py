"""How a batch of records reaches a sink: one function per kind, ``send(target, records, pool) -> note``.

``records`` are the queued JSON texts (apps/sinks/records.py), sent as they are where the format allows.
A transport raises ``DeliveryError`` when the batch should be tried again later (a connection failure,
a timeout, a 5xx, a refused credential); what it returns is a note kept as the sink's last error when
the batch was accepted only in part (Langfuse's per-event errors), else "".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import urllib3

from apps.sinks.redaction import redact_text


class DeliveryError(Exception):
    """The batch did not arrive; the message is safe to show (no secret, bounded length)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact_text(message)[:400])


@dataclass(frozen=True, slots=True)
class SinkTarget:
    """What a transport needs of a sink, with its secret decrypted (never logged, never stored)."""

    id: int
    kind: str
    name: str
    organization_id: int
    url: str
    access_id: str
    secret: str
    bucket: str
    prefix: str
    region: str
    timeout: float

    def __repr__(self) -> str:  # the secret stays out of tracebacks and logs
        return f"SinkTarget(id={self.id}, kind={self.kind!r}, name={self.name!r})"


Send = Callable[[SinkTarget, list[bytes], urllib3.PoolManager], str]


def http_error(exc: Exception) -> DeliveryError:
    """A connection-level failure, named by its class (urllib3's text can carry the URL's query string)."""
    return DeliveryError(f"{type(exc).__name__}: {exc}")
