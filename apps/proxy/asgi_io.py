"""Bare ASGI helpers: read a bounded request body, send JSON/bytes/SSE. No framework on the hot path."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from django.conf import settings

from apps.proxy.errors import GatewayError, bad_request

JSON_CT = (b"content-type", b"application/json")
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def header_map(scope: dict[str, Any]) -> dict[bytes, bytes]:
    """Request headers as a dict (lower-case names, last one wins)."""
    return dict(scope["headers"])


async def read_body(receive, headers: dict[bytes, bytes], limit: int, idle_timeout: float | None = None) -> bytes:
    """The whole request body, or 413 as soon as it exceeds ``limit`` bytes (declared or actual).

    A body that stops arriving (a client that declares 20 MB and sends 10 bytes) is a 408 after
    ``idle_timeout`` seconds without a chunk (``PROXY_BODY_IDLE_TIMEOUT_SECONDS``), instead of holding
    the request open forever. Only the later chunks are timed: an ordinary request's body is complete
    in its first message, so the hot path never arms a timer.
    """
    declared = headers.get(b"content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise bad_request("Invalid Content-Length header.") from None
        if size > limit:
            raise too_large(limit)
    chunks: list[bytes] = []
    total = 0
    message = await receive()
    while True:
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > limit:
                raise too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
        if idle_timeout is None:
            idle_timeout = settings.PROXY_BODY_IDLE_TIMEOUT_SECONDS
        try:
            async with asyncio.timeout(idle_timeout):
                message = await receive()
        except TimeoutError:
            raise GatewayError(
                408, f"The request body stalled: nothing arrived for {idle_timeout:g} s.", code="request_timeout",
                kind="body_timeout", headers={"connection": "close"},
            ) from None  # fmt: skip
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def too_large(limit: int) -> GatewayError:
    return GatewayError(413, f"Request body larger than {limit} bytes.", code="request_too_large", kind="too_large")


class ClientGone(Exception):
    """The client went away before we answered."""


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; 400 for invalid UTF-8, malformed JSON or a non-object."""
    if not raw:
        raise bad_request("Request body is empty; expected a JSON object.")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = (
            "Request body is not valid UTF-8." if "utf-8" in str(exc).lower() else "Request body is not valid JSON."
        )
        raise bad_request(message) from None
    if not isinstance(data, dict):
        raise bad_request("Request body must be a JSON object.")
    return data


def encode_headers(extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]


async def send_response(
    send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], content_type: bytes = b"application/json"
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(send, status: int, payload: Any, headers: list[tuple[bytes, bytes]]) -> None:
    await send_response(send, status, orjson.dumps(payload), headers)
