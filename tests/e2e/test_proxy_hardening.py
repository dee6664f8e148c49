"""Adversarial checks of the /v1 surface against a real gateway: what an attacker or a demanding client hits.

A hostile upstream (redirects, leaky error texts, gzip) is served over real HTTP next to the regular
mock; every request goes through a real uvicorn gateway (tests/support/gateway.py).
"""

from __future__ import annotations

import gzip
import socket
import uuid
from typing import Any

import orjson
import pytest
from aiohttp import web

from apps.keys.invalidation import publish_invalidation
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import GatewayServer, deploy, http, spend_event
from tests.support.threaded_app import ThreadedApp

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

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


def _name(prefix: str = "hard") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _auth(tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {tenant.alice_key.secret}"}


def _chat(gateway, tenant, model: str, **extra) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return http("POST", gateway.v1 + "/chat/completions", json=body, headers=_auth(tenant))


def _deploy(gateway, provider: str, api_base: str, model: str = "up", **values) -> str:
    name = _name(provider)
    spec = {"model_name": name, "provider": provider, "model": model, "api_base": api_base, **values}
    deploy(gateway, {"api_key": UPSTREAM_KEY, **spec})
    return name


# --- redirects: the upstream pool must never follow them -----------------------------------------------
@pytest.mark.parametrize("code", [302, 307])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_upstream_redirects_are_not_followed(gateway, tenant, hostile, code, provider):
    """A redirect would reach hosts no deployment names (metadata, internal services) with the credentials."""
    name = _deploy(gateway, provider, f"{hostile.base}/redirect{code}" + ("/v1" if provider == "openai" else ""))
    hostile.loot.clear()
    response = _chat(gateway, tenant, name)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["llm_provider"] == provider
    assert "AKIASECRET" not in response.text
    assert hostile.loot == []


# --- upstream error texts: relayed, but never the deployment's key, host or account ------------------------
def _assert_nothing_private(text: str, hostile) -> None:
    for private in (UPSTREAM_KEY, OPENAI_ORG, "10.20.30.40", hostile.base, f"127.0.0.1:{hostile.port}", "123456789012"):
        assert private not in text, (private, text)


def test_upstream_error_texts_never_carry_credentials_hosts_or_accounts(gateway, tenant, hostile):
    name = _deploy(gateway, "openai", f"{hostile.base}/leaky/v1")
    response = _chat(gateway, tenant, name)
    assert response.status_code == 400, response.text
    assert "rejected key" in response.json()["error"]["message"]  # the upstream's text is still relayed
    _assert_nothing_private(response.text, hostile)

    rate = _deploy(gateway, "openai", f"{hostile.base}/leaky/v1", model="rate")
    response = _chat(gateway, tenant, rate)
    assert response.status_code == 429, response.text
    assert "Rate limit reached for gpt-4o" in response.json()["error"]["message"]
    _assert_nothing_private(response.text, hostile)


def test_error_events_inside_a_stream_are_scrubbed(gateway, tenant, hostile):
    name = _deploy(gateway, "openai", f"{hostile.base}/leaky/v1", model="stream-error")
    response = _chat(gateway, tenant, name, stream=True)
    assert response.status_code == 200
    assert b'"llm_provider":"openai"' in response.content and b"failed for key" in response.content
    _assert_nothing_private(response.text, hostile)

    claude = _deploy(gateway, "anthropic", f"{hostile.base}/leaky")
    response = http(
        "POST",
        gateway.v1 + "/messages",
        json={"model": claude, "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": tenant.alice_key.secret},
    )
    assert response.status_code == 200 and b"event: error" in response.content
    _assert_nothing_private(response.text, hostile)


def test_responses_api_failure_events_are_scrubbed(gateway, tenant, hostile):
    name = _deploy(gateway, "openai", f"{hostile.base}/leaky/v1")
    response = http(
        "POST", gateway.v1 + "/responses", json={"model": name, "input": "hi", "stream": True}, headers=_auth(tenant)
    )
    assert response.status_code == 200
    assert response.content.count(b"key ***") == 2, response.content
    _assert_nothing_private(response.text, hostile)


def test_gemini_rejecting_the_deployment_key_is_not_the_clients_400(gateway, tenant, hostile):
    """Gemini says 400 "API key not valid" for a bad key: the client's key was fine, the deployment's is not."""
    name = _deploy(gateway, "gemini", f"{hostile.base}/leaky/gemini", model="gemini-up")
    response = _chat(gateway, tenant, name)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["llm_provider"] == "gemini" and "API key not valid" not in error["message"]


# --- hostile input -----------------------------------------------------------------------------------
@pytest.fixture
def mock_model(gateway) -> str:
    name = _name("mock")
    deploy(gateway, {"model_name": name, "provider": "mock", "model": "mock-up"})
    return name


def _raw_exchange(gateway, request: bytes, timeout: float = 10) -> bytes:
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


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "path", ["/v1/files/file-gw-AAAA.%C3%A9", "/v1/batches/batch_gw-AAAA.%E2%80%A8", "/v1/files/file-gw-%C3%A9.abc"]
)
def test_non_ascii_file_and_batch_ids_are_404(gateway, tenant, path):
    response = http("GET", gateway.url + path, headers=_auth(tenant))
    assert response.status_code == 404, response.text


def test_non_ascii_input_file_id_of_a_batch_is_404(gateway, tenant):
    body = {"input_file_id": "file-gw-AAAA.\u00e9", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    response = http("POST", gateway.v1 + "/batches", json=body, headers=_auth(tenant))
    assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/files/..%2F..%2Fadmin",
        "/v1/files/file-gw-x%3Fa=b",
        "/v1/batches/..",
        "/v1/files/%2e%2e/content",
    ],
)
def test_traversal_shaped_ids_are_404(gateway, tenant, path):
    response = http("GET", gateway.url + path, headers=_auth(tenant))
    assert response.status_code in (404, 405), response.text  # (405: GET on the collection's own path)
    assert response.json()["error"]


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "assistant", "tool_calls": 5}],
        [{"role": "assistant", "tool_calls": True}],
        [{"role": "user", "content": [5, None, {"type": "image_url"}]}],
    ],
)
def test_ill_typed_message_fields_are_a_400_not_a_5xx(gateway, tenant, mock_model, messages):
    body = {"model": mock_model, "messages": [*messages, {"role": "user", "content": "x"}]}
    response = http("POST", gateway.v1 + "/chat/completions", json=body, headers=_auth(tenant))
    assert response.status_code in (200, 400), response.text


@pytest.mark.parametrize("path", ["/embeddings", "/completions", "/moderations"])
def test_a_non_list_messages_field_on_other_routes_is_not_a_5xx(gateway, tenant, mock_model, path):
    body = {"model": mock_model, "input": "x", "prompt": "x", "messages": 5}
    response = http("POST", gateway.v1 + path, json=body, headers=_auth(tenant))
    assert response.status_code in (200, 400), response.text


@pytest.mark.parametrize("depth", [80, 300])
def test_a_forbidden_field_nested_deeper_than_the_walk_is_still_refused(gateway, tenant, mock_model, depth):
    raw = b'{"model": "%s", "messages": [{"role": "user", "content": "x"}], "extra": ' % mock_model.encode()
    raw += b"[" * depth + b'{"api_base": "http://evil.example"}' + b"]" * depth + b"}"
    headers = {**_auth(tenant), "content-type": "application/json"}
    response = http("POST", gateway.v1 + "/chat/completions", content=raw, headers=headers)
    assert response.status_code == 400, response.text


def test_very_deep_json_is_a_400(gateway, tenant, mock_model):
    raw = b'{"model": "%s", "messages": [{"role": "user", "content": "x"}], "x": ' % mock_model.encode()
    raw += b"[" * 5000 + b"]" * 5000 + b"}"
    response = http(
        "POST",
        gateway.v1 + "/chat/completions",
        content=raw,
        headers={**_auth(tenant), "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("value", ["true", 1, {"on": True}])
def test_stream_must_be_a_boolean(gateway, tenant, mock_model, value):
    response = _chat(gateway, tenant, mock_model, stream=value)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "stream"


def _multipart(fields: dict[str, bytes | str], boundary: str = "b0undary") -> tuple[bytes, str]:
    out = b""
    for name, value in fields.items():
        if isinstance(value, bytes):
            head = f'Content-Disposition: form-data; name="{name}"; filename="a.wav"\r\nContent-Type: audio/wav'
        else:
            head, value = f'Content-Disposition: form-data; name="{name}"', value.encode()
        out += f"--{boundary}\r\n{head}\r\n\r\n".encode() + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/audio/transcriptions", {"api_base": "http://evil.example", "file": b"RIFF"}),
        ("/files", {"purpose": "assistants", "api_key": "sk-mine", "file": b"{}"}),
        (
            "/files",
            {"purpose": "batch", "file": b'{"custom_id": "1", "body": {"messages": [], "base_url": "http://evil"}}'},
        ),
    ],
)
def test_forbidden_fields_in_a_multipart_upload_are_refused(gateway, tenant, mock_model, path, fields):
    body, content_type = _multipart({"model": mock_model, **fields})
    headers = {**_auth(tenant), "content-type": content_type}
    response = http("POST", gateway.v1 + path, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert "cannot be set by clients" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/audio/transcriptions", "/v1/files"])
def test_chunked_uploads_over_the_limit_are_413(gateway, tenant, mock_model, path):
    """No content-length to trust: the gateway counts the chunks (PROXY_MAX_BODY_BYTES is 64 KiB here)."""
    if path == "/v1/chat/completions":
        payload, content_type = (
            orjson.dumps({"model": mock_model, "messages": [{"role": "user", "content": "x" * 90_000}]}),
            "application/json",
        )
    else:
        payload, content_type = _multipart({"model": mock_model, "purpose": "assistants", "file": b"\0" * 90_000})
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(payload[i : i + 8192]), payload[i : i + 8192]) for i in range(0, len(payload), 8192)
    )
    request = (
        (
            f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tenant.alice_key.secret}\r\n"
            f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode()
        + chunks
        + b"0\r\n\r\n"
    )
    answer = _raw_exchange(gateway, request)
    assert _status(answer) == 413, answer[:300]


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: {n}\r\nContent-Length: 5",
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: xchunked\r\nContent-Length: {n}",
        "Content-Length: {n}\r\n X-Folded: continuation",
    ],
)
def test_ambiguous_request_framing_is_refused(gateway, tenant, mock_model, framing):
    """What a front proxy and the gateway could frame differently (smuggling) never reaches the app."""
    payload = orjson.dumps({"model": mock_model, "messages": [{"role": "user", "content": "x"}]})
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tenant.alice_key.secret}\r\n"
        f"Content-Type: application/json\r\n{framing.format(n=len(payload))}\r\nConnection: close\r\n\r\n"
    ).encode() + payload
    answer = _raw_exchange(gateway, request)
    assert _status(answer) == 400, answer[:300]


@pytest.mark.parametrize(
    "headers",
    [
        lambda key: {"Authorization": f"bearer {key}"},
        lambda key: {"Authorization": f"BEARER   {key}  "},
        lambda key: {"x-api-key": key},
        lambda key: {"api-key": key},
    ],
)
def test_key_header_spellings_clients_use(gateway, tenant, mock_model, headers):
    body = {"model": mock_model, "messages": [{"role": "user", "content": "x"}]}
    response = http("POST", gateway.v1 + "/chat/completions", json=body, headers=headers(tenant.alice_key.secret))
    assert response.status_code == 200, response.text


def test_gzipped_upstream_answer_is_relayed_decoded_with_a_matching_length(gateway, tenant, hostile):
    name = _deploy(gateway, "openai", f"{hostile.base}/gzip/v1")
    response = _chat(gateway, tenant, name)
    assert response.status_code == 200, response.text
    assert "content-encoding" not in response.headers
    assert int(response.headers["content-length"]) == len(response.content)
    # None of the upstream's own headers reach the client: ids, account, limits, cookies, its servers.
    assert response.headers["x-request-id"].startswith("req_") and response.headers["x-request-id"] != "req_upstream_1"
    leaked = {"openai-organization", "openai-project", "x-ratelimit-remaining-requests", "set-cookie", "via"}
    assert not leaked & set(response.headers) and "internal" not in str(response.headers)
    assert response.json()["choices"][0]["message"]["content"] == "z" * 5000


# --- private upstreams off: names are checked when connecting, not only literal addresses -----------------
@pytest.fixture(scope="module")
def public_only_gateway(django_db_setup, django_db_blocker, upstream):
    with django_db_blocker.unblock(), GatewayServer(PROXY_ALLOW_PRIVATE_UPSTREAMS="false") as server:
        yield server


def test_a_host_name_resolving_to_a_private_address_is_refused_when_private_upstreams_are_off(
    public_only_gateway, tenant, upstream
):
    """``localhost`` passes the write-time check (names are not resolved then); connecting must refuse it."""
    name = _deploy(public_only_gateway, "openai", upstream.url.replace("127.0.0.1", "localhost"))
    seen = len(upstream.requests)
    response = _chat(public_only_gateway, tenant, name)
    assert response.status_code == 502, response.text
    assert len(upstream.requests) == seen


# --- a stream the gateway cannot read ends with an error event, never a silent cut -------------------------
def test_an_unreadable_stream_chunk_ends_the_stream_with_an_error_event(gateway, tenant, hostile):
    name = _deploy(gateway, "openai", f"{hostile.base}/odd-stream/v1")
    response = _chat(gateway, tenant, name, stream=True)
    assert response.status_code == 200 and b"partial" in response.content
    last = response.content.strip().split(b"\n\n")[-1]
    assert last.startswith(b"data: {") and b'"error"' in last, response.content

    response = http(
        "POST",
        gateway.v1 + "/messages",
        json={"model": name, "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": tenant.alice_key.secret},
    )
    assert response.status_code == 200
    assert response.content.strip().split(b"\n\n")[-1].startswith(b"event: error"), response.content


# --- answers are judged by what they are, not by their content-type label ----------------------------------
def test_an_html_page_instead_of_json_is_a_502(gateway, tenant, hostile):
    name = _deploy(gateway, "openai", f"{hostile.base}/labels/v1", model="html")
    response = _chat(gateway, tenant, name)
    assert response.status_code == 502, response.text
    assert response.headers["content-type"] == "application/json" and "log in" not in response.text


def test_json_labelled_text_plain_is_read_as_json_and_billed_by_its_usage(gateway, tenant, hostile):
    name = _deploy(
        gateway,
        "openai",
        f"{hostile.base}/labels/v1",
        input_cost_per_token="0.000001",
        output_cost_per_token="0.000001",
    )
    response = _chat(gateway, tenant, name)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-gateway-cost"] == "0.002"  # 2,000 reported tokens, not an estimate


def test_events_of_a_route_the_gateway_does_not_stream_are_relayed_as_is_and_billed(gateway, tenant, hostile):
    name = _deploy(gateway, "openai", f"{hostile.base}/labels/v1", extra={"cost_per_image": "0.04"})
    body = {"model": name, "prompt": "a cat", "stream": True, "partial_images": 1}
    response = http("POST", gateway.v1 + "/images/generations", json=body, headers=_auth(tenant))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert b"image_generation.completed" in response.content
    assert response.headers["x-gateway-cost"] == "0.04"  # one image, as for the same answer without events


def test_jsonl_file_content_is_relayed_as_is(gateway, tenant, hostile):
    name = _deploy(gateway, "openai", f"{hostile.base}/labels/v1")
    body, content_type = _multipart({"model": name, "purpose": "assistants", "file": b"{}"})
    created = http("POST", gateway.v1 + "/files", content=body, headers={**_auth(tenant), "content-type": content_type})
    assert created.status_code == 200, created.text
    content = http("GET", f"{gateway.v1}/files/{created.json()['id']}/content", headers=_auth(tenant))
    assert content.status_code == 200, content.text
    assert content.content.count(b"custom_id") == 2


# --- upstream answers are bounded (PROXY_MAX_RESPONSE_BYTES): one tenant's upstream cannot exhaust memory ---
@pytest.fixture(scope="module")
def bounded_gateway(django_db_setup, django_db_blocker, upstream):
    with django_db_blocker.unblock(), GatewayServer(PROXY_MAX_RESPONSE_BYTES="100000") as server:
        yield server


@pytest.mark.parametrize(
    ("model", "stream"), [("declared", False), ("gzip-bomb", False), ("chunked", False), ("endless-event", True)]
)
def test_an_upstream_answer_over_the_limit_is_a_502(bounded_gateway, tenant, hostile, model, stream):
    name = _deploy(bounded_gateway, "openai", f"{hostile.base}/big/v1", model=model)
    response = _chat(bounded_gateway, tenant, name, stream=stream)
    if stream:
        assert response.status_code == 200 and b'"error"' in response.content, response.content[-300:]
        assert b"larger than the gateway relays" in response.content
    else:
        assert response.status_code == 502, response.text[:300]
        assert response.json()["error"]["message"] == "The upstream answer is larger than the gateway relays."


def test_a_garbled_bedrock_event_stream_ends_with_an_error_event(gateway, tenant, hostile):
    name = _deploy(
        gateway, "bedrock", f"{hostile.base}/garbled/bedrock", model="anthropic.claude-x", api_key="AKIA:SECRET"
    )
    response = _chat(gateway, tenant, name, stream=True)
    assert response.status_code == 200
    last = response.content.strip().split(b"\n\n")[-1]
    assert last.startswith(b"data: {") and b'"llm_provider":"bedrock"' in last, response.content


@pytest.mark.parametrize("value", ["inf", "nan", "1e300", "-5"])
def test_an_absurd_upstream_retry_after_is_still_a_clean_429(gateway, tenant, hostile, value):
    name = _deploy(gateway, "openai", f"{hostile.base}/leaky/v1", model=f"retry-after={value}")
    response = _chat(gateway, tenant, name)
    assert response.status_code == 429, response.text
    assert response.json()["error"]["llm_provider"] == "openai"
    assert 1 <= int(response.headers["retry-after"]) <= 3600


def test_an_odd_shaped_answer_is_the_upstreams_fault_not_a_gateway_error(gateway, tenant, hostile):
    name = _deploy(gateway, "openai", f"{hostile.base}/odd/v1")
    response = http(
        "POST",
        gateway.v1 + "/messages",
        json={"model": name, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": tenant.alice_key.secret},
    )
    assert response.status_code == 502, response.text
    assert response.json()["error"]["llm_provider"] == "openai"

    body, content_type = _multipart({"model": name, "purpose": "assistants", "file": b"{}"})
    created = http("POST", gateway.v1 + "/files", content=body, headers={**_auth(tenant), "content-type": content_type})
    assert created.status_code == 502, created.text
    assert created.json()["error"]["llm_provider"] == "openai"


def test_a_stream_request_answered_without_streaming_is_an_error_not_an_empty_stream(gateway, tenant, hostile):
    """An upstream that ignores "stream": true sends one JSON document: no events, and the client must not
    read an empty stream as a complete (empty) answer."""
    name = _deploy(gateway, "openai", f"{hostile.base}/labels/v1")
    response = _chat(gateway, tenant, name, stream=True)
    assert response.status_code == 502, response.content
    assert response.json()["error"]["llm_provider"] == "openai"


# --- client headers: the one an SDK feature needs goes upstream, nothing else ------------------------------
def test_anthropic_beta_header_reaches_an_anthropic_deployment_and_nothing_else_does(gateway, tenant, upstream):
    name = _deploy(gateway, "anthropic", upstream.base)
    beta = "context-1m-2025-08-07,interleaved-thinking-2025-05-14"
    response = http(
        "POST",
        gateway.v1 + "/messages",
        json={"model": name, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={
            "x-api-key": tenant.alice_key.secret,
            "anthropic-beta": beta,
            "anthropic-version": "1999-01-01",
            "openai-organization": "org-client",
            "cookie": "session=client",
            "x-forwarded-for": "6.6.6.6",
        },
    )
    assert response.status_code == 200, response.text
    sent = {k.lower(): v for k, v in upstream.last("/v1/messages")["headers"].items()}
    assert sent["anthropic-beta"] == beta
    assert sent["x-api-key"] == UPSTREAM_KEY and sent["anthropic-version"] == "2023-06-01"
    assert not {"openai-organization", "cookie", "x-forwarded-for", "authorization"} & set(sent)
    assert tenant.alice_key.secret not in str(sent)


def test_an_upstream_id_is_one_escaped_path_segment_of_later_calls(gateway, tenant, hostile):
    """Ids come back from the upstream inside signed handles; "../x?y" must not re-route the gateway's calls."""
    name = _deploy(gateway, "openai", f"{hostile.base}/odd-id/v1")
    body, content_type = _multipart({"model": name, "purpose": "assistants", "file": b"{}"})
    created = http("POST", gateway.v1 + "/files", content=body, headers={**_auth(tenant), "content-type": content_type})
    assert created.status_code == 200, created.text
    hostile.loot.clear()
    fetched = http("GET", f"{gateway.v1}/files/{created.json()['id']}", headers=_auth(tenant))
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["path"] in (  # (yarl may leave "=" unescaped: it is harmless inside a path)
        "/odd-id/v1/files/..%2F..%2Floot%3Fsteal=1%23x",
        "/odd-id/v1/files/..%2F..%2Floot%3Fsteal%3D1%23x",
    )
    assert hostile.loot == []


def _sse_data(content: bytes) -> list[bytes]:
    """Each event's data as an SSE client reads it (fields other than data/event would be ignored)."""
    events = []
    for block in content.strip().split(b"\n\n"):
        lines = block.split(b"\n")
        assert all(line.startswith((b"data: ", b"event: ")) for line in lines), block
        events.append(b"\n".join(line[6:] for line in lines if line.startswith(b"data: ")))
    return events


def test_multi_line_sse_data_is_relayed_as_events_a_client_can_read(gateway, tenant, hostile):
    name = _deploy(gateway, "openai", f"{hostile.base}/multiline/v1")
    response = _chat(gateway, tenant, name, stream=True)
    assert response.status_code == 200
    data = _sse_data(response.content)
    assert data[-1] == b"[DONE]" and orjson.loads(data[0])["choices"][0]["delta"]["content"] == "multi"

    claude = _deploy(gateway, "anthropic", f"{hostile.base}/multiline")
    response = http(
        "POST",
        gateway.v1 + "/messages",
        json={"model": claude, "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": tenant.alice_key.secret},
    )
    assert response.status_code == 200
    assert [orjson.loads(d)["type"] for d in _sse_data(response.content)][-1] == "message_stop"


# --- batch files: the upstream runs the deployment the upload was checked (and charged) for -----------------
def test_a_batch_file_cannot_run_a_model_the_key_may_not_use(gateway, tenant, hostile):
    allowed = _deploy(gateway, "openai", f"{hostile.base}/keeps-files/v1", model="up-cheap")
    forbidden = _deploy(gateway, "openai", f"{hostile.base}/keeps-files/v1", model="up-expensive")
    tenant.alice_key.allowed_models = [allowed]
    tenant.alice_key.save()
    publish_invalidation("test key")
    for line_model in (forbidden, "up-expensive", allowed):
        line = {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": line_model}}
        body, content_type = _multipart({"model": allowed, "purpose": "batch", "file": orjson.dumps(line)})
        hostile.files.clear()
        response = http(
            "POST", gateway.v1 + "/files", content=body, headers={**_auth(tenant), "content-type": content_type}
        )
        if line_model != allowed:
            assert response.status_code == 400, response.text
            assert hostile.files == []
            continue
        assert response.status_code == 200, response.text
        # The upstream runs the deployment the upload was checked and charged for, by its own model id.
        assert orjson.loads(hostile.files[-1]["content"])["body"]["model"] == "up-cheap"


def test_a_batch_is_charged_for_what_its_input_file_holds(gateway, tenant, mock_model):
    """Only files uploaded as batch input are counted; a form whose parsers could disagree is refused."""
    line = {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": mock_model}}
    content = b"\n".join([orjson.dumps(line)] * 50)
    body, content_type = _multipart({"model": mock_model, "purpose": "assistants", "file": content})
    headers = {**_auth(tenant), "content-type": content_type}
    uploaded = http("POST", gateway.v1 + "/files", content=body, headers=headers)
    assert uploaded.status_code == 200, uploaded.text
    batch = {"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    response = http("POST", gateway.v1 + "/batches", json=batch, headers=_auth(tenant))
    assert response.status_code == 400, response.text

    # Two "purpose" parts: the gateway reads one, an upstream may read the other.
    twice = b'--b0undary\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
    twice += _multipart({"model": mock_model, "purpose": "assistants", "file": content})[0]
    response = http("POST", gateway.v1 + "/files", content=twice, headers=headers)
    assert response.status_code == 400, response.text
    assert "more than once" in response.json()["error"]["message"]


@pytest.mark.parametrize("include_usage", [True, False])
def test_streamed_completions_carry_and_bill_the_upstream_usage(gateway, tenant, hostile, include_usage):
    name = _deploy(gateway, "openai", f"{hostile.base}/legacy/v1")
    body = {"model": name, "prompt": "hi", "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    response = http("POST", gateway.v1 + "/completions", json=body, headers=_auth(tenant))
    assert response.status_code == 200
    usage = [orjson.loads(d).get("usage") for d in _sse_data(response.content) if d != b"[DONE]"]
    assert (usage[-1] or {}).get("completion_tokens") == (1000 if include_usage else None), response.content
    event = spend_event(response.headers["x-request-id"])
    assert (event["prompt_tokens"], event["completion_tokens"]) == (900, 1000)  # the upstream's count


def test_a_gemini_error_inside_a_stream_ends_it_with_an_error_event(gateway, tenant, hostile):
    name = _deploy(gateway, "gemini", f"{hostile.base}/gemini-fails", model="gemini-up")
    response = _chat(gateway, tenant, name, stream=True)
    assert response.status_code == 200 and b"half an answer" in response.content
    last = _sse_data(response.content)[-1]
    assert orjson.loads(last)["error"]["llm_provider"] == "gemini", response.content
    _assert_nothing_private(response.text, hostile)


def test_absurdly_long_model_and_user_never_reach_the_ledger_whole(gateway, tenant, mock_model):
    long_model = "m" * 50_000 + "\r\nx-injected: 1"
    response = _chat(gateway, tenant, long_model)
    assert response.status_code == 404 and len(response.content) < 1000, response.text[:200]
    assert "x-injected" not in response.headers
    assert len(spend_event(response.headers["x-request-id"])["model"]) <= 200

    response = _chat(gateway, tenant, mock_model, user="u" * 50_000)
    assert response.status_code == 200, response.text[:200]
    assert len(spend_event(response.headers["x-request-id"])["customer_id"]) <= 255


@pytest.mark.parametrize(("path", "field"), [("/images/generations", "n"), ("/embeddings", "dimensions")])
@pytest.mark.parametrize("value", [10**18, 10**8, -5])
def test_the_builtin_mock_refuses_sizes_that_would_exhaust_the_worker(gateway, tenant, mock_model, path, field, value):
    body = {"model": mock_model, "prompt": "a cat", "input": "x", field: value}
    response = http("POST", gateway.v1 + path, json=body, headers=_auth(tenant), timeout=10)
    assert response.status_code == 400, response.text[:200]
    assert response.json()["error"]["param"] == field


# --- every route x odd field values x every provider: a clean 4xx/5xx, never a gateway error or a hang ------
ODD_VALUES = [None, True, -1, 1.5, 10**18, "", "x", [], [None], [1], [{}], {}, {"type": "text"}, [{"role": "user"}]]
ODD_FIELDS = {
    "/chat/completions": ("messages", "tools", "tool_choice", "response_format", "stop", "n", "max_tokens", "user"),
    "/completions": ("prompt", "max_tokens", "n"),
    "/embeddings": ("input", "encoding_format", "dimensions"),
    "/responses": ("input", "instructions", "tools"),
    "/images/generations": ("prompt", "n"),
    "/audio/speech": ("input",),
    "/moderations": ("input",),
    "/rerank": ("query", "documents", "top_n"),
    "/messages": ("messages", "max_tokens", "system", "tools", "tool_choice", "metadata"),
    "/batches": ("input_file_id", "metadata"),
}
VALID = {
    "/chat/completions": {"messages": [{"role": "user", "content": "x"}]},
    "/completions": {"prompt": "x"},
    "/embeddings": {"input": "x"},
    "/responses": {"input": "x"},
    "/images/generations": {"prompt": "x"},
    "/audio/speech": {"input": "x", "voice": "alloy"},
    "/moderations": {"input": "x"},
    "/rerank": {"query": "q", "documents": ["a"]},
    "/messages": {"messages": [{"role": "user", "content": "x"}], "max_tokens": 5},
    "/batches": {"input_file_id": "file-gw-x.y"},
}


@pytest.mark.parametrize("provider", ["mock", "openai", "anthropic", "gemini", "bedrock"])
def test_no_request_shape_gets_a_gateway_error_or_hangs(gateway, tenant, upstream, provider):
    base = {"openai": upstream.url, "anthropic": upstream.base, "gemini": upstream.base + "/gemini"}
    base["bedrock"] = upstream.base + "/bedrock"
    name = _name(provider)
    # (The mock upstream answers odd shapes with 500s: no cooldown, every request must reach the gateway's code.)
    spec = {"model_name": name, "provider": provider, "model": "up", "extra": {"cooldown_failures": 10**6}}
    deploy(gateway, {**spec, "api_base": base.get(provider, ""), "api_key": "AK:SK" if provider == "bedrock" else "k"})
    odd = []
    for path, fields in ODD_FIELDS.items():
        for field in fields:
            for value in ODD_VALUES:
                for stream in (False, True) if path in ("/chat/completions", "/messages") else (False,):
                    body = {"model": name, **VALID[path], field: value, **({"stream": True} if stream else {})}
                    response = http("POST", gateway.v1 + path, json=body, headers=_auth(tenant), timeout=10)
                    status, text = response.status_code, response.content
                    if b"gateway_error" in text or (status >= 500 and b"llm_provider" not in text):
                        odd.append((path, field, value, stream, status, text[:200]))
    assert not odd, odd[:10]
