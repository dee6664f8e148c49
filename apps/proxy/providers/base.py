"""The one interface every provider implements, and the HTTP plumbing most of them share.

The proxy speaks OpenAI's formats to clients. An adapter turns a ``Call`` (operation + OpenAI-shaped
body) into one upstream HTTP request, and the upstream's answer back into OpenAI's shape:
``Reply`` for a whole body, ``StreamReply`` for server-sent events (items are ``Chunk`` objects
carrying an OpenAI chunk dict, plus the raw bytes when they can be relayed unchanged).
Anthropic's ``/v1/messages`` can also be served natively (``native_ops``), without translation.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from apps.proxy.errors import AddressRefused, GatewayError, UpstreamError, scrub_upstream_text
from apps.proxy.registry import Deployment


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0  # part of prompt_tokens, billed at the cache-write price (Anthropic)
    images: int = 0
    audio_seconds: float = 0.0
    characters: int = 0
    reported: bool = False  # True when the upstream said so (otherwise estimated)

    def take(self, usage: dict[str, Any] | None) -> None:
        """Read OpenAI (chat/completions/embeddings) or Responses-API usage into this object."""
        if not usage:
            return
        prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
        completion = usage.get("completion_tokens", usage.get("output_tokens"))
        if prompt is not None:
            self.prompt_tokens = int(prompt)
            self.reported = True
        if completion is not None:
            self.completion_tokens = int(completion)
            self.reported = True
        details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
        if isinstance(details, dict) and details.get("cached_tokens"):
            self.cached_tokens = int(details["cached_tokens"])


@dataclass(slots=True)
class Call:
    op: str  # chat, completions, embeddings, responses, images, audio_speech, ... (see OP_PATHS)
    body: dict[str, Any]
    stream: bool = False
    form: list | None = None  # multipart parts for uploads: (name, filename, content_type, data)
    path_args: tuple[str, ...] = ()  # e.g. a batch or file id
    include_usage: bool = False  # the client asked for the usage chunk
    anthropic_beta: str | None = None  # the client's anthropic-beta header (Anthropic deployments send it on)
    # perf_counter() when the upstream's response head arrived (set by ``send``; 0: no head, e.g. unreachable).
    responded_at: float = 0.0
    traceparent: str | None = None  # W3C trace context of this attempt's span (tracing on), sent upstream
    tracestate: str | None = None


@dataclass(slots=True)
class Reply:
    body: bytes
    usage: Usage
    content_type: bytes = b"application/json"
    status: int = 200
    obj: dict[str, Any] | None = None  # parsed body, when the caller may need to translate it


@dataclass(slots=True)
class Chunk:
    obj: dict[str, Any]
    raw: bytes | None = None  # the exact upstream "data:" payload when it is relayed unchanged


@dataclass(slots=True)
class StreamReply:
    """Chunks as the upstream sends them; ``usage`` is complete once iteration ends."""

    chunks: AsyncIterator[Any]
    usage: Usage
    on_close: list[Callable[[], Any]] = field(default_factory=list)
    native: bool = False  # items are (event_name, data bytes) in the provider's own SSE format

    async def aclose(self) -> None:
        closer = getattr(self.chunks, "aclose", None)
        if closer is not None:
            # Closing a dead upstream must not mask the real outcome.
            with contextlib.suppress(Exception):
                await closer()
        callbacks, self.on_close = self.on_close, []
        for callback in callbacks:
            callback()


OP_PATHS = {
    "chat": "/chat/completions",
    "completions": "/completions",
    "embeddings": "/embeddings",
    "responses": "/responses",
    "images": "/images/generations",
    "audio_speech": "/audio/speech",
    "audio_transcriptions": "/audio/transcriptions",
    "moderations": "/moderations",
    "rerank": "/rerank",
    "files_create": "/files",
    "files_get": "/files/{0}",
    "files_content": "/files/{0}/content",
    "files_delete": "/files/{0}",
    "batches_create": "/batches",
    "batches_get": "/batches/{0}",
    "batches_cancel": "/batches/{0}/cancel",
    "batches_list": "/batches",
}
GET_OPS = frozenset({"files_get", "files_content", "batches_get", "batches_list"})


@dataclass(slots=True)
class HttpRequest:
    method: str
    url: str
    headers: dict[str, str]
    data: Any = None  # bytes or aiohttp.FormData


def sse_events(buffer: bytearray, data: bytes) -> list[tuple[str | None, bytes]]:
    """Feed bytes; return the complete (event, data) pairs. Keeps the incomplete tail in ``buffer``."""
    buffer += data
    events: list[tuple[str | None, bytes]] = []
    while True:
        end = buffer.find(b"\n\n")
        sep = 2
        crlf = buffer.find(b"\r\n\r\n")
        if crlf != -1 and (end == -1 or crlf < end):
            end, sep = crlf, 4
        if end == -1:
            return events
        block = bytes(buffer[:end])
        del buffer[: end + sep]
        name = None
        payload: list[bytes] = []
        for line in block.splitlines():
            if line.startswith(b"data:"):
                payload.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line.startswith(b"event:"):
                name = line[6:].strip().decode("latin-1")
        if payload:
            # Several data lines make one event. Joined with a space, not the spec's newline: the payloads are
            # JSON (where either is whitespace between tokens), and the joined bytes are relayed to clients
            # after a single "data: " (a newline there would start a field the client's parser ignores).
            events.append((name, payload[0] if len(payload) == 1 else b" ".join(payload)))


# What a translation raises when a body does not have the shape it should (never a 500 for that).
SHAPE_ERRORS = (AttributeError, TypeError, KeyError, ValueError, IndexError)


def malformed(provider: str) -> UpstreamError:
    return UpstreamError(
        502,
        "The upstream returned a response of an unexpected shape.",
        llm_provider=provider,
        kind="upstream_bad_response",
    )


def json_or_502(raw: bytes, provider: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError(
            502, "The upstream returned a malformed response.", llm_provider=provider, kind="upstream_bad_response"
        ) from None


MAX_RETRY_AFTER_SECONDS = 3600.0


def _retry_after(headers) -> float | None:
    value = headers.get("retry-after") or headers.get("x-ratelimit-reset-requests")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    # "inf", "nan", "1e300": a client's retry-after header must stay a small integer (int(inf) raised).
    return min(seconds, MAX_RETRY_AFTER_SECONDS) if seconds > 0 else 0.0


ADDRESS_REFUSED_DETAIL = (
    "refused: the host resolves only to link-local/metadata addresses "
    "(or private ones while PROXY_ALLOW_PRIVATE_UPSTREAMS is off)"
)


def upstream_io_error(provider: str, exc: BaseException, broken: str) -> UpstreamError:
    """A timeout (504) or a failed connection (502, saying ``broken``): both worth another deployment."""
    if isinstance(exc, TimeoutError):
        return UpstreamError(
            504, "The upstream did not answer in time.", llm_provider=provider, retryable=True, kind="upstream_timeout"
        )
    refused = isinstance(getattr(exc, "os_error", None), AddressRefused) or isinstance(exc, AddressRefused)
    return UpstreamError(
        502,
        broken,
        llm_provider=provider,
        retryable=True,
        kind="upstream_connection",
        # Clients only read ``broken``; the admin's connection test says why nothing was tried.
        operator_detail=ADDRESS_REFUSED_DETAIL if refused else "",
    )


def private_strings(dep: Deployment) -> tuple[str, ...]:
    """What an upstream may echo about its deployment that no client may read: key (and parts), api_base, host."""
    values: list[str] = []
    key = dep.api_key
    if key:
        values.append(key)
        if key.startswith("{"):  # Bedrock's JSON credentials
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                values += [str(v) for v in orjson.loads(key).values() if v]
        else:
            values += key.split(":")
    if dep.api_base:
        parts = urlsplit(dep.api_base)
        values += [dep.api_base.rstrip("/"), parts.netloc, parts.hostname or ""]
    return tuple(sorted({v for v in values if len(v) >= 4}, key=len, reverse=True))


def upstream_error(provider: str, status: int, raw: bytes, headers, private: tuple[str, ...] = ()) -> UpstreamError:
    """Map an upstream HTTP error onto what the client should see (and whether to retry elsewhere).

    The upstream's text is relayed (it is often the useful part) with the deployment's ``private``
    strings, key-shaped tokens, account ids and addresses masked.
    """
    message = f"upstream returned HTTP {status}"
    try:
        data = orjson.loads(raw) if raw else None
        if isinstance(data, list) and data:
            data = data[0]
        if isinstance(data, dict):
            err = data.get("error", data)
            if isinstance(err, dict):
                message = str(err.get("message") or err.get("msg") or message)
            elif isinstance(err, str):
                message = err
    except orjson.JSONDecodeError:
        pass
    message = scrub_upstream_text(message[:1000], private)[:500]
    if status == 429:
        return UpstreamError(
            429,
            message,
            llm_provider=provider,
            retryable=True,
            retry_after=_retry_after(headers),
            kind="upstream_rate_limit",
            code="rate_limit_exceeded",
            upstream_status=status,
        )
    if status >= 500 or status == 408:
        client_status = 504 if status in (408, 504) else 502
        return UpstreamError(
            client_status, message, llm_provider=provider, retryable=True, kind="upstream_error", upstream_status=status
        )
    if status in (401, 403):
        # The client's key was fine; the gateway's credentials for this deployment are not. Providers echo
        # (masked) keys in this message: clients get a generic text, operators the scrubbed detail (in the
        # admin, and in the router's once-per-interval failure line: never one line per request).
        detail = message[:200]
        return UpstreamError(
            502,
            "The upstream rejected the gateway's credentials for this deployment.",
            llm_provider=provider,
            retryable=True,
            kind="upstream_auth",
            upstream_status=status,
            operator_detail=detail,
        )
    client_status = status if status in (400, 404, 413) else 400
    return UpstreamError(
        client_status, message, llm_provider=provider, kind="upstream_bad_request", upstream_status=status
    )


@functools.lru_cache(maxsize=64)
def _client_timeout(timeout: float, stream: bool) -> aiohttp.ClientTimeout:
    """Streams bound each read (a long answer may take minutes); whole bodies bound the total."""
    if stream:
        return aiohttp.ClientTimeout(total=None, sock_connect=min(timeout, 30.0), sock_read=timeout)
    return aiohttp.ClientTimeout(total=timeout)


ERROR_BODY_BYTES = 64 * 1024  # of an upstream error answer: enough for its message


def too_large(provider: str) -> UpstreamError:
    return UpstreamError(
        502, "The upstream answer is larger than the gateway relays.", llm_provider=provider, kind="upstream_too_large"
    )


async def read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The decoded body, or None once it passes ``limit`` bytes (a gzip'd answer can inflate far beyond its length)."""
    chunks: list[bytes] = []
    total = 0
    async for data in response.content.iter_any():
        total += len(data)
        if total > limit:
            return None
        chunks.append(data)
    return b"".join(chunks)


class Adapter:
    """A provider. Subclasses implement ``prepare``/``parse``/``stream_chunks`` or override ``send``."""

    name = "base"
    max_response_bytes = 128 * 1024 * 1024  # settings.PROXY_MAX_RESPONSE_BYTES (set by build_adapters)
    ops: frozenset[str] = frozenset()
    native_ops: frozenset[str] = frozenset()

    def supports(self, op: str) -> bool:
        return op in self.ops or op in self.native_ops

    async def send(self, session: aiohttp.ClientSession, dep: Deployment, call: Call, timeout: float):
        try:
            request = self.prepare(dep, call)
        except SHAPE_ERRORS as exc:
            raise GatewayError(
                400, f"The request body has an unexpected shape ({type(exc).__name__}).", kind="bad_request"
            ) from None
        if call.traceparent is not None:
            request.headers["traceparent"] = call.traceparent
            if call.tracestate:
                request.headers["tracestate"] = call.tracestate
        client_timeout = _client_timeout(timeout, call.stream)
        try:
            # Never follow a redirect: it would carry the deployment's credentials (x-api-key, api-key, ...) and
            # the request to a host no deployment names, past the link-local/private checks on api_base.
            response = await session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.data,
                timeout=client_timeout,
                allow_redirects=False,
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise upstream_io_error(self.name, exc, f"Could not reach the upstream ({type(exc).__name__}).") from None
        call.responded_at = time.perf_counter()  # the upstream's time to first byte, for the request explorer
        if response.status >= 300:
            if response.status < 400:
                response.release()
                raise UpstreamError(
                    502,
                    "The upstream answered with a redirect; the gateway does not follow redirects.",
                    llm_provider=self.name,
                    retryable=True,
                    kind="upstream_redirect",
                    upstream_status=response.status,
                    # For the admin's connection test: often http:// where https:// is needed, or a missing /v1.
                    operator_detail=f"HTTP {response.status} to {response.headers.get('Location', '?')[:200]}",
                )
            try:
                raw = await read_bounded(response, ERROR_BODY_BYTES) or b""
            except (TimeoutError, aiohttp.ClientError):
                raw = b""
            response.release()
            raise self.error_for(dep, response.status, raw, response.headers)
        if call.stream:
            content_type = response.headers.get("Content-Type", "")
            if "json" in content_type or "html" in content_type:
                # The upstream ignored "stream": true (or a proxy answered): no events would come, and an empty
                # stream would read as a complete, empty answer. A 502 before the client's stream starts.
                response.close()
                raise UpstreamError(
                    502,
                    "The upstream did not answer with a stream.",
                    llm_provider=self.name,
                    kind="upstream_bad_response",
                )
            usage = Usage()
            return StreamReply(
                chunks=self._guarded(self.stream_chunks(dep, call, response, usage), response, dep),
                usage=usage,
                native=call.op in self.native_ops,
            )
        try:
            length = response.content_length
            if length is not None and length <= self.max_response_bytes and "Content-Encoding" not in response.headers:
                raw = await response.read()  # the common case: a declared, plain length within bounds
            else:
                raw = await read_bounded(response, self.max_response_bytes)
                if raw is None:
                    raise too_large(self.name)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise upstream_io_error(self.name, exc, "The upstream connection broke.") from None
        finally:
            response.release()
        try:
            return self.parse(dep, call, raw, response.headers.get("content-type", "application/json"))
        except SHAPE_ERRORS:
            raise malformed(self.name) from None

    def error_for(self, dep: Deployment, status: int, raw: bytes, headers) -> UpstreamError:
        """The client-facing error for an upstream HTTP error status (providers adjust their quirks here)."""
        return upstream_error(self.name, status, raw, headers, private_strings(dep))

    async def _guarded(self, chunks: AsyncIterator[Any], response: aiohttp.ClientResponse, dep: Deployment):
        """Mid-stream upstream failures become UpstreamError; the connection is always released."""
        try:
            async for item in chunks:
                yield item
        except UpstreamError as exc:
            # An error event in the stream (Anthropic "error", Bedrock exceptions, OpenAI {"error": ...}).
            exc.message = scrub_upstream_text(exc.message[:1000], private_strings(dep))[:500]
            raise
        except TimeoutError:
            raise UpstreamError(
                504, "The upstream stalled mid-stream.", llm_provider=self.name, kind="upstream_timeout"
            ) from None
        except aiohttp.ClientError:
            raise UpstreamError(
                502, "The upstream stream broke.", llm_provider=self.name, kind="upstream_connection"
            ) from None
        except SHAPE_ERRORS:
            raise malformed(self.name) from None
        finally:
            response.close()

    async def sse(self, response: aiohttp.ClientResponse):
        """(event, data) pairs as they arrive, one network read at a time (no line buffering delay)."""
        buffer = bytearray()
        async for data in response.content.iter_any():
            for event in sse_events(buffer, data):
                yield event
            if len(buffer) > self.max_response_bytes:  # one event without an end, growing
                raise too_large(self.name)
        if buffer.strip():
            for event in sse_events(buffer, b"\n\n"):
                yield event

    def prepare(self, dep: Deployment, call: Call) -> HttpRequest:
        raise NotImplementedError

    def parse(self, dep: Deployment, call: Call, raw: bytes, content_type: str) -> Reply:
        raise NotImplementedError

    def stream_chunks(self, dep: Deployment, call: Call, response: aiohttp.ClientResponse, usage: Usage):
        raise NotImplementedError
