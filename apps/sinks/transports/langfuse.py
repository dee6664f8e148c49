"""Langfuse: each record becomes a trace and its generation, POSTed to the public ingestion API.

``POST <host>/api/public/ingestion`` with HTTP basic auth (public key, secret key) and
``{"batch": [event, ...]}``; each event is ``{"id", "type", "timestamp", "body"}``. Event ids are derived
from the request id, so a retried batch is deduplicated by Langfuse rather than recorded twice; the
trace's id is the gateway's request id (the ``x-request-id`` a client saw). Langfuse answers 207 with
per-event ``successes`` and ``errors``: an error of 5xx fails the batch (tried again), others are input
errors that a retry would repeat, kept as the sink's last error.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import orjson
import urllib3

from apps.sinks.transports import DeliveryError, SinkTarget, http_error

PATH = "/api/public/ingestion"
_NAMESPACE = uuid.UUID("6f1c8f0e-3b7a-4f43-9d5e-0c7a1b2d4e5f")


def _event_id(request_id: str, kind: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{request_id}:{kind}"))


def _start(record: dict) -> str:
    end = datetime.fromisoformat(record["created_at"])
    return (end - timedelta(milliseconds=record.get("latency_ms") or 0)).isoformat()


def events_of(record: dict) -> list[dict]:
    """The trace-create and generation-create events of one record."""
    request_id = record["request_id"]
    finished = record["created_at"]
    gateway = {
        name: record.get(name)
        for name in ("organization_id", "team_id", "key_id", "key_alias", "deployment_id", "llm_provider", "status")
    }
    if "metadata" in record:
        gateway["metadata"] = record["metadata"]
    trace = {
        "id": request_id,
        "timestamp": _start(record),
        "name": record.get("route") or "request",
        "userId": record.get("customer_id") or None,
        "sessionId": record.get("session_id") or None,
        "metadata": gateway,
        "tags": [t for t in (record.get("key_alias"), record.get("llm_provider")) if t],
    }
    generation = {
        "id": f"{request_id}-generation",
        "traceId": request_id,
        "name": record.get("route") or "request",
        "startTime": _start(record),
        "endTime": finished,
        "model": record.get("model") or None,
        "usageDetails": {
            "input": record.get("prompt_tokens") or 0,
            "output": record.get("completion_tokens") or 0,
            "cache_read_input_tokens": record.get("cached_tokens") or 0,
        },
        "costDetails": {"total": float(record.get("cost") or 0)},
        "level": "ERROR" if (record.get("status") or 0) >= 400 else "DEFAULT",
        "statusMessage": record.get("error_type") or None,
        "metadata": gateway,
    }
    if record.get("ttft_ms") is not None:
        first = datetime.fromisoformat(_start(record)) + timedelta(milliseconds=record["ttft_ms"])
        generation["completionStartTime"] = first.isoformat()
    return [
        {"id": _event_id(request_id, "trace"), "type": "trace-create", "timestamp": finished, "body": trace},
        {
            "id": _event_id(request_id, "generation"),
            "type": "generation-create",
            "timestamp": finished,
            "body": generation,
        },
    ]


def send(target: SinkTarget, records: list[bytes], pool: urllib3.PoolManager) -> str:
    batch = [event for raw in records for event in events_of(orjson.loads(raw))]
    headers = urllib3.make_headers(basic_auth=f"{target.access_id}:{target.secret}")
    headers["Content-Type"] = "application/json"
    url = (target.url or "https://cloud.langfuse.com").rstrip("/") + PATH
    try:
        response = pool.request(
            "POST",
            url,
            body=orjson.dumps({"batch": batch}),
            headers=headers,
            timeout=target.timeout,
            retries=False,
            redirect=False,
        )
    except urllib3.exceptions.HTTPError as exc:
        raise http_error(exc) from None
    if not 200 <= response.status < 300:
        raise DeliveryError(f"HTTP {response.status} from Langfuse")
    try:
        errors = orjson.loads(response.data).get("errors") or []
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    if any(int(e.get("status") or 0) >= 500 for e in errors):
        raise DeliveryError(f"Langfuse failed {len(errors)} of {len(batch)} events (5xx)")
    if errors:
        first = errors[0]
        return f"Langfuse refused {len(errors)} of {len(batch)} events: {first.get('message') or first.get('error')}"
    return ""
