"""A hostile upstream and the helpers of the /v1 hardening tests (tests/e2e/test_proxy_*_hardening.py).

``HostileUpstream`` misbehaves on purpose (redirects, leaky error texts, gzip bombs, odd labels and
streams), served over real HTTP from a thread like the regular mock (tests/support/mock_upstream.py).
Import the fixtures into a test module with ``from tests.support.hostile_upstream import *  # noqa: F403``.
"""

from __future__ import annotations

import gzip
import socket
from typing import Any

import orjson
import pytest
from aiohttp import web

from tests.support.gateway import deploy, http, unique_name
from tests.support.threaded_app import ThreadedApp

__all__ = ["hostile", "mock_model"]

UPSTREAM_KEY = "sk-upstream-hostile-0123456789"
OPENAI_ORG = "org-Zq3xW9kLmN0pQrStUv"


class HostileUpstream(ThreadedApp):
    """An upstream that misbehaves on purpose; ``loot`` records whatever reaches the redirect target."""

    def __init__(self) -> None:
        super().__init__()
        self.base = f"http://127.0.0.1:{self.port}"
        self.loot: list[dict[str, Any]] = []
        self.files: list[dict[str, Any]] = []

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/loot", self.loot_handler)
        app.router.add_post("/redirect{code:\\d+}/v1/chat/completions", self.redirect)
        app.router.add_post("/redirect{code:\\d+}/v1/messages", self.redirect)
        app.router.add_post("/leaky/v1/chat/completions", self.leaky)
        app.router.add_post("/leaky/v1/messages", self.leaky_messages)
        app.router.add_post("/leaky/v1/responses", self.leaky_responses)
        app.router.add_post("/leaky/gemini/models/{action}", self.gemini_bad_key)
        app.router.add_post("/gemini-fails/models/{action}", self.gemini_fails_mid_stream)
        app.router.add_post("/gzip/v1/chat/completions", self.gzipped)
        app.router.add_post("/odd-stream/v1/chat/completions", self.odd_stream)
        app.router.add_post("/legacy/v1/completions", self.completions_stream)
        app.router.add_post("/multiline/v1/chat/completions", self.multiline_stream)
        app.router.add_post("/multiline/v1/messages", self.multiline_stream)
        app.router.add_post("/labels/v1/chat/completions", self.mislabelled)
        app.router.add_post("/labels/v1/audio/transcriptions", self.transcription)
        app.router.add_post("/labels/v1/images/generations", self.image_events)
        app.router.add_post("/labels/v1/files", self.file_created)
        app.router.add_get("/labels/v1/files/{id}/content", self.file_content)
        app.router.add_post("/odd-id/v1/files", self.file_created)
        app.router.add_post("/keeps-files/v1/files", self.file_kept)
        app.router.add_get("/odd-id/v1/files/{id}", self.file_by_id)
        app.router.add_post("/big/v1/chat/completions", self.big)
        app.router.add_post("/odd/v1/chat/completions", self.odd_json)
        app.router.add_post("/odd/v1/files", self.odd_json)
        app.router.add_post("/garbled/bedrock/model/{model}/{action}", self.garbled_eventstream)
        return app

    async def loot_handler(self, request: web.Request) -> web.Response:
        self.loot.append({"method": request.method, "headers": dict(request.headers), "body": await request.read()})
        return web.Response(text="ami-id: i-0123 iam/security-credentials/role AKIASECRET", content_type="text/plain")

    async def redirect(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=int(request.match_info["code"]), headers={"Location": f"{self.base}/loot"})

    async def leaky(self, request: web.Request) -> web.Response:
        body = await request.json()
        internal = f"http://10.20.30.40:8000/v1 (via {self.base}/leaky/v1)"
        if body.get("model") == "rate":
            message = (
                f"Rate limit reached for gpt-4o in organization {OPENAI_ORG} on tokens per min (TPM): "
                "Limit 30000, Used 29000. Visit https://platform.openai.com/account/rate-limits to learn more."
            )
            return web.json_response({"error": {"message": message}}, status=429, headers={"Retry-After": "1"})
        if body.get("model", "").startswith("retry-after="):
            value = body["model"].split("=", 1)[1]
            return web.json_response({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": value})
        if body.get("model") == "stream-error":
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            error = {"error": {"message": f"backend {internal} failed for key {UPSTREAM_KEY}", "type": "server_error"}}
            await response.write(b"data: " + orjson.dumps(error) + b"\n\n")
            return response
        message = f"Upstream {internal} rejected key {UPSTREAM_KEY} for arn:aws:bedrock:us-east-1:123456789012:model/x"
        return web.json_response({"error": {"message": message}}, status=400)

    async def leaky_messages(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        error = {"type": "error", "error": {"type": "overloaded_error", "message": f"{OPENAI_ORG} at {self.base}"}}
        await response.write(b"event: error\ndata: " + orjson.dumps(error) + b"\n\n")
        return response

    async def leaky_responses(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        leak = f"key {UPSTREAM_KEY} on 10.20.30.40 for {OPENAI_ORG}"
        events = [
            ("error", {"type": "error", "code": "server_error", "message": leak, "param": None}),
            ("response.failed", {"type": "response.failed", "response": {"id": "r", "error": {"message": leak}}}),
        ]
        for name, event in events:
            await response.write(b"event: " + name.encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n")
        return response

    async def gemini_fails_mid_stream(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        part = {"candidates": [{"content": {"role": "model", "parts": [{"text": "half an answer"}]}}]}
        await response.write(b"data: " + orjson.dumps(part) + b"\r\n\r\n")
        error = {"error": {"code": 500, "message": f"internal at {self.base}", "status": "INTERNAL"}}
        await response.write(b"data: " + orjson.dumps(error) + b"\r\n\r\n")
        return response

    async def gemini_bad_key(self, request: web.Request) -> web.Response:
        await request.read()
        # What generativelanguage.googleapis.com answers for a wrong key: a 400, not a 401.
        error = {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
        }
        return web.json_response({"error": error}, status=400)

    async def odd_stream(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up"}
        delta = {"index": 0, "delta": {"role": "assistant", "content": "partial"}, "finish_reason": None}
        await response.write(b"data: " + orjson.dumps({**chunk, "choices": [delta]}) + b"\n\n")
        await response.write(b"data: " + orjson.dumps({**chunk, "choices": ["not-a-choice"]}) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    async def completions_stream(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        chunk = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "up"}
        for piece in ("legacy", " text"):
            choice = {"index": 0, "text": piece, "finish_reason": None, "logprobs": None}
            await response.write(b"data: " + orjson.dumps({**chunk, "choices": [choice]}) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 900, "completion_tokens": 1000, "total_tokens": 1900}
            await response.write(b"data: " + orjson.dumps({**chunk, "choices": [], "usage": usage}) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response

    async def multiline_stream(self, request: web.Request) -> web.StreamResponse:
        """Legal SSE: one event's data over several ``data:`` lines (pretty-printed JSON)."""
        await request.read()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        def event(obj: dict, name: str = "") -> bytes:
            lines = orjson.dumps(obj, option=orjson.OPT_INDENT_2).split(b"\n")
            head = b"event: " + name.encode() + b"\n" if name else b""
            return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"

        if request.path.endswith("/messages"):
            message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "up", "content": []}
            message |= {"stop_reason": None, "usage": {"input_tokens": 3, "output_tokens": 0}}
            await response.write(event({"type": "message_start", "message": message}, "message_start"))
            block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            await response.write(event(block, "content_block_start"))
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "multi"}}
            await response.write(event(delta, "content_block_delta"))
            await response.write(event({"type": "message_stop"}, "message_stop"))
            return response
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up"}
        choice = {"index": 0, "delta": {"role": "assistant", "content": "multi"}, "finish_reason": None}
        await response.write(event({**chunk, "choices": [choice]}))
        await response.write(event({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        await response.write(b"data: [DONE]\n\n")
        return response

    async def mislabelled(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["model"] == "html":  # a captive portal or a misrouted load balancer
            return web.Response(text="<html><body>Please log in</body></html>", content_type="text/html")
        answer = {
            "id": "chatcmpl-plain",
            "object": "chat.completion",
            "created": 1,
            "model": "up",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000},
        }
        if body.get("stream"):  # a server that does not stream: one JSON document
            return web.json_response(answer)
        return web.Response(body=orjson.dumps(answer), content_type="text/plain")  # a sloppy compatible server

    async def transcription(self, request: web.Request) -> web.Response:
        """Whisper's answer in each response_format: only some of them say how long the audio was."""
        form = await request.post()
        kind = form.get("response_format", "json")
        if kind == "srt":
            cues = "1\n00:00:00,000 --> 00:00:02,000\nhello\n\n2\n00:00:02,000 --> 00:01:05,500\nthere\n"
            return web.Response(text=cues, content_type="text/plain")
        if kind == "text":
            return web.Response(text="hello there\n", content_type="text/plain")
        if kind == "legacy_json":
            return web.json_response({"text": "hello there"})
        return web.json_response({"text": "hello there", "usage": {"type": "duration", "seconds": 9}})

    async def image_events(self, request: web.Request) -> web.Response:
        await request.read()  # gpt-image-1 with "stream": true answers with events
        event = {"type": "image_generation.completed", "b64_json": "AAAA", "usage": {"total_tokens": 5}}
        body = b"event: image_generation.completed\ndata: " + orjson.dumps(event) + b"\n\n"
        return web.Response(body=body, content_type="text/event-stream")

    async def file_created(self, request: web.Request) -> web.Response:
        await request.read()
        file_id = "../../loot?steal=1#x" if request.path.startswith("/odd-id") else "file-up-1"
        return web.json_response({"id": file_id, "object": "file", "purpose": "batch", "bytes": 10})

    async def file_kept(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.files.append({"model": form.get("model"), "content": form["file"].file.read()})
        return web.json_response({"id": "file-kept", "object": "file", "purpose": "batch", "bytes": 10})

    async def file_by_id(self, request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["id"], "object": "file", "path": request.path_qs})

    async def file_content(self, request: web.Request) -> web.Response:
        lines = b'{"custom_id": "1", "response": {}}\n{"custom_id": "2", "response": {}}\n'
        return web.Response(body=lines, content_type="application/jsonl")

    async def big(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        padding = "z" * 300_000
        answer = orjson.dumps({"id": "c", "object": "chat.completion", "choices": [], "padding": padding})
        if body["model"] == "declared":
            return web.Response(body=answer, content_type="application/json")
        if body["model"] == "gzip-bomb":  # ~1 KB on the wire, 300 KB once inflated
            headers = {"content-type": "application/json", "content-encoding": "gzip"}
            return web.Response(body=gzip.compress(answer), headers=headers)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        if body["model"] == "endless-event":
            await response.write(b'data: {"choices": [{"delta": {"content": "' + padding.encode())
            return response
        response.enable_chunked_encoding()  # "chunked": no length to check up front
        for i in range(0, len(answer), 16_384):
            await response.write(answer[i : i + 16_384])
        return response

    async def garbled_eventstream(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"content-type": "application/vnd.amazon.eventstream"})
        await response.prepare(request)
        await response.write(b"\x00\x00\x00\x20\x00\x00\x00\x00" + b"\xde\xad\xbe\xef" * 8)
        return response

    async def odd_json(self, request: web.Request) -> web.Response:
        await request.read()
        if request.path.endswith("/files"):
            return web.json_response(["not", "an", "object"])
        return web.json_response({"id": "c", "object": "chat.completion", "choices": "nope"})

    async def gzipped(self, request: web.Request) -> web.Response:
        body = await request.json()
        answer = {
            "id": "chatcmpl-gz",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "z" * 5000}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        }
        upstream_headers = {
            "openai-organization": OPENAI_ORG,
            "openai-project": "proj_internal123",
            "x-request-id": "req_upstream_1",
            "x-ratelimit-remaining-requests": "4",
            "server": "internal-vllm-7.corp",
            "set-cookie": "upstream_session=abc",
            "via": "1.1 internal-proxy",
        }
        return web.Response(
            body=gzip.compress(orjson.dumps(answer)),
            headers={"content-type": "application/json", "content-encoding": "gzip", **upstream_headers},
        )


@pytest.fixture(scope="module")
def hostile():
    with HostileUpstream() as server:
        yield server


@pytest.fixture
def mock_model(gateway) -> str:
    name = unique_name("mock")
    deploy(gateway, {"model_name": name, "provider": "mock", "model": "mock-up"})
    return name


def auth_headers(tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.alice_key.secret}"}


def chat(gateway, tenant, model: str, **extra) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return http("POST", gateway.v1 + "/chat/completions", json=body, headers=auth_headers(tenant))


def messages(gateway, tenant, model: str, headers: dict[str, str] | None = None, **extra) -> Any:
    """``POST /v1/messages`` as the anthropic SDK sends it (``x-api-key``), with ``extra`` body fields."""
    body = {"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], **extra}
    return http(
        "POST", gateway.v1 + "/messages", json=body, headers={"x-api-key": tenant.alice_key.secret, **(headers or {})}
    )


def deploy_at(gateway, provider: str, api_base: str, model: str = "up", **values) -> str:
    """One deployment of ``provider`` at ``api_base`` (the hostile key unless ``api_key``); its public name."""
    name = unique_name(provider)
    spec = {"model_name": name, "provider": provider, "model": model, "api_base": api_base, **values}
    deploy(gateway, {"api_key": UPSTREAM_KEY, **spec})
    return name


def assert_nothing_private(text: str, hostile) -> None:
    for private in (UPSTREAM_KEY, OPENAI_ORG, "10.20.30.40", hostile.base, f"127.0.0.1:{hostile.port}", "123456789012"):
        assert private not in text, (private, text)


def multipart(fields: dict[str, bytes | str], boundary: str = "b0undary") -> tuple[bytes, str]:
    out = b""
    for name, value in fields.items():
        if isinstance(value, bytes):
            head = f'Content-Disposition: form-data; name="{name}"; filename="a.wav"\r\nContent-Type: audio/wav'
        else:
            head, value = f'Content-Disposition: form-data; name="{name}"', value.encode()
        out += f"--{boundary}\r\n{head}\r\n\r\n".encode() + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def sse_data(content: bytes) -> list[bytes]:
    """Each event's data as an SSE client reads it (fields other than data/event would be ignored)."""
    events = []
    for block in content.strip().split(b"\n\n"):
        lines = block.split(b"\n")
        assert all(line.startswith((b"data: ", b"event: ")) for line in lines), block
        events.append(b"\n".join(line[6:] for line in lines if line.startswith(b"data: ")))
    return events


def raw_exchange(gateway, request: bytes, timeout: float = 10) -> bytes:
    """Bytes on the wire (for framing the standard clients refuse to send); the whole answer."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks) and b"connection: close" not in b"".join(chunks).lower():
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                length = next(
                    (
                        int(v)
                        for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n"))
                        if k.lower() == b"content-length"
                    ),
                    None,
                )
                if length is not None and len(body) >= length:
                    break
        return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])
