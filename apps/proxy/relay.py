"""Server-sent events to the client: unbuffered relay, client-disconnect handling, usage accounting.

Each upstream chunk is written as soon as it arrives. A watcher waits for ``http.disconnect``; when
the client goes away the upstream read is cancelled (which closes the upstream connection) and the
caller still finishes the request (post_call, spend) with the usage of what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from apps.proxy.asgi_io import SSE_HEADERS
from apps.proxy.errors import GatewayError
from apps.proxy.providers import Chunk, StreamReply
from apps.proxy.providers.anthropic_reverse import ChatToMessagesStream
from apps.proxy.providers.base import SHAPE_ERRORS

DONE = b"data: [DONE]\n\n"


@dataclass(slots=True)
class StreamOutcome:
    status: int = 200
    error_type: str | None = None
    ttft_ms: float | None = None
    sent_chars: int = 0  # content characters relayed (for usage estimates)
    text: list[str] | None = None  # the completion's text, when asked for (a team's traces record it)


def _event(name: str, payload: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"


class ChatEncoder:
    """OpenAI chat/completions chunks to the client (relayed byte for byte when unchanged)."""

    tail = DONE

    def encode(self, item: Any) -> bytes:
        if isinstance(item, Chunk):
            return b"data: " + (item.raw if item.raw is not None else orjson.dumps(item.obj)) + b"\n\n"
        name, data = item
        return _event(name, data) if name else b"data: " + data + b"\n\n"

    def end(self) -> bytes:
        return self.tail


class NativeEncoder(ChatEncoder):
    """Provider-native named events (Anthropic messages, OpenAI Responses), relayed as they are."""

    tail = b""


class MessagesEncoder:
    """OpenAI chat chunks from any provider, re-shaped into Anthropic Messages stream events."""

    def __init__(self, model: str, prompt_estimate: int) -> None:
        self.converter = ChatToMessagesStream(model, prompt_estimate)

    def encode(self, item: Any) -> bytes:
        events = self.converter.chunk(item.obj)
        return b"".join(_event(name, orjson.dumps(payload)) for name, payload in events)

    def end(self) -> bytes:
        return b"".join(_event(name, orjson.dumps(payload)) for name, payload in self.converter.end())


def _content_chars(item: Any) -> int:
    if isinstance(item, Chunk):
        delta = item.obj.get("delta")
        if isinstance(delta, str):  # Responses API *.delta events
            return len(delta)
        total = 0
        for choice in item.obj.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str):
                total += len(content)
            elif choice.get("text"):
                total += len(choice["text"])
            for call in delta.get("tool_calls") or ():
                total += len((call.get("function") or {}).get("arguments") or "")
        return total
    return len(item[1]) // 3  # native events: rough share of the payload that is text


def _content_text(item: Any) -> str:
    """The text a chunk adds to the completion: chat deltas, completions text, Responses deltas, and the
    ``text_delta`` of native Anthropic events (read here only for teams whose traces keep the text)."""
    if isinstance(item, Chunk):
        obj = item.obj
    else:
        try:
            obj = orjson.loads(item[1])
        except orjson.JSONDecodeError:
            return ""
        if not isinstance(obj, dict):
            return ""
    delta = obj.get("delta")
    if isinstance(delta, str):
        return delta
    if isinstance(delta, dict):
        text = delta.get("text")
        return text if isinstance(text, str) else ""
    parts = []
    for choice in obj.get("choices") or ():
        content = (choice.get("delta") or {}).get("content") or choice.get("text")
        if isinstance(content, str):
            parts.append(content)
    return "".join(parts)


async def _wait_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def relay_stream(
    send,
    receive,
    reply: StreamReply,
    encoder: Any,
    headers: list[tuple[bytes, bytes]],
    started: float,
    on_error: Callable[[GatewayError], bytes],
    *,
    capture_text: bool = False,
    keeper: Any = None,
    chunk_filter: Any = None,
) -> StreamOutcome:
    """Relay ``reply`` to the client. ``keeper`` (the response cache's ``StreamKeeper``), when given, sees every
    item and, once the upstream ended the stream normally, ``finish``-es before the last event goes out.
    ``chunk_filter`` (the guardrails' ``ChunkFilter``, when the key's policy masks answers) rewrites each
    chunk's text before it is encoded (and kept), and its ``flush`` gives the chunks for text it still held
    at the end."""
    outcome = StreamOutcome(text=[] if capture_text else None)
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})

    async def pump() -> None:
        try:
            async for upstream_item in reply.chunks:
                # The guardrails may rewrite an item, hold all of its text back (no item) or add one before it.
                items = (upstream_item,) if chunk_filter is None else chunk_filter.apply(upstream_item)
                for item in items:
                    data = encoder.encode(item)
                    outcome.sent_chars += _content_chars(item)
                    if outcome.text is not None:
                        outcome.text.append(_content_text(item))
                    if keeper is not None:
                        keeper.add(item)
                    if data:
                        if outcome.ttft_ms is None:
                            outcome.ttft_ms = (time.perf_counter() - started) * 1000
                        await send({"type": "http.response.body", "body": data, "more_body": True})
            if chunk_filter is not None:
                for obj in chunk_filter.flush():  # text still held back when the upstream stopped
                    held = Chunk(obj)
                    if keeper is not None:
                        keeper.add(held)
                    await send({"type": "http.response.body", "body": encoder.encode(held), "more_body": True})
            tail = encoder.end()
            if keeper is not None:
                await keeper.finish()
        except GatewayError as exc:
            outcome.status, outcome.error_type = exc.status, exc.kind
            tail = on_error(exc)
        except SHAPE_ERRORS:
            # A chunk that could not be read or re-shaped: end with an error event, never with a silent cut
            # (a client would take the truncated answer for a complete one).
            exc = GatewayError(502, "The upstream stream had an unexpected shape.", kind="upstream_bad_response")
            outcome.status, outcome.error_type = exc.status, exc.kind
            tail = on_error(exc)
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    relay = asyncio.ensure_future(pump())
    watcher = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait((relay, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not relay.done():
            relay.cancel()
            outcome.status, outcome.error_type = 499, "client_disconnect"
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await relay
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
        await reply.aclose()
    if relay.done() and not relay.cancelled() and relay.exception() is not None:
        raise relay.exception()  # type: ignore[misc]
    return outcome
