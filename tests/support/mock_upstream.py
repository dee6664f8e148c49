"""A local mock of the upstream providers, served over real HTTP from a thread of the test process.

Speaks OpenAI (every /v1 route the gateway relays, streaming included), Anthropic ``/v1/messages``,
Gemini ``generateContent``/``streamGenerateContent``/``batchEmbedContents`` and Bedrock
``converse``/``converse-stream`` (AWS event-stream framing). Behaviour follows the upstream model id:

- ``fail-500`` / ``fail-429`` (Retry-After: 7) / ``auth-fail`` (401) / ``bad-request`` (400) / ``not-found`` (404)
- ``bad-json``: 200 with a body that is not JSON; ``slow``: answers after 3 s
- ``drip``: streams a chunk every 100 ms for 30 s (for client-disconnect tests)
- ``break-stream``: sends a few chunks, then drops the connection; ``reset-stream``: the same, then a TCP RST
- ``uses-max-tokens``: reports as many completion tokens as the request's max_tokens allowed (the worst
  case a budget must be able to pay; non-streaming chat and messages)
- ``leak-pii``: chat, messages and responses answer a fixed text holding a card number and an e-mail address
  (``LEAKED``), streamed in 5-character pieces so the card number is split across chunks
- ``llama-guard``: chat answers like Llama Guard: ``unsafe\nS1`` when the last user message says "attack",
  else ``safe``. ``/v1/moderations`` scores "violence" 0.93 (flagged) for input that says "attack"
- anything else answers normally. Every request is recorded in ``requests`` (path, headers, body).
"""

from __future__ import annotations

import asyncio
import socket
import struct
import zlib
from typing import Any

import orjson
from aiohttp import web

from tests.support.threaded_app import ThreadedApp

PROMPT_TOKENS, COMPLETION_TOKENS = 11, 7
LEAKED = (
    "Here is what we have on file for this account, read back exactly as it was stored for you. "
    "Sure: the card is 4111 1111 1111 1111 and the owner is bob@example.com, as asked. Anything else today?"
)


def _failure(model: str) -> web.Response | None:
    if model == "fail-500":
        return web.json_response({"error": {"message": "upstream exploded", "type": "server_error"}}, status=500)
    if model == "fail-429":
        return web.json_response({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "7"})
    if model == "auth-fail":
        # Like OpenAI, echo (part of) the key back: the gateway must not pass that on to its clients.
        return web.json_response({"error": {"message": "Incorrect API key provided: sk-proj-ab12****wxyz"}}, status=401)
    if model == "bad-request":
        return web.json_response(
            {"error": {"message": "upstream says no", "type": "invalid_request_error"}}, status=400
        )
    if model == "not-found":  # a deployment whose upstream model id is wrong (as OpenAI answers it)
        return web.json_response(
            {"error": {"message": f"The model `{model}` does not exist.", "code": "model_not_found"}}, status=404
        )
    if model == "bad-json":
        return web.Response(text="<html>definitely not json", content_type="application/json")
    return None


def _completion_tokens(model: str, body: dict[str, Any]) -> int:
    if model == "uses-max-tokens":
        return body.get("max_completion_tokens") or body.get("max_tokens") or COMPLETION_TOKENS
    return COMPLETION_TOKENS


def _last_user(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
    return ""


def _pieces(text: str, size: int = 5) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _event(name: str, obj: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def eventstream_message(event_type: str, payload: dict[str, Any]) -> bytes:
    """One AWS event-stream frame (what Bedrock's converse-stream sends)."""
    headers = b""
    for name, value in ((":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")):
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
    body = orjson.dumps(payload)
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + headers + body
    return message + struct.pack(">I", zlib.crc32(message) & 0xFFFFFFFF)


class MockUpstream(ThreadedApp):
    def __init__(self) -> None:
        super().__init__()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/v1"
        self.requests: list[dict[str, Any]] = []

    def build_app(self) -> web.Application:
        @web.middleware
        async def sets_a_cookie(request: web.Request, handler) -> web.StreamResponse:
            # Like hosted APIs behind a CDN: every answer sets a cookie. A gateway that kept it would
            # send one tenant's cookie upstream with every other tenant's requests.
            response = await handler(request)
            response.set_cookie("upstream_session", "first-caller", max_age=3600)
            return response

        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[sets_a_cookie])
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_post("/v1/images/generations", self.images)
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        app.router.add_post("/v1/moderations", self.moderations)
        app.router.add_post("/v1/rerank", self.rerank)
        app.router.add_post("/v1/files", self.files)
        app.router.add_get("/v1/files/{id}", self.file_get)
        app.router.add_delete("/v1/files/{id}", self.file_delete)
        app.router.add_post("/v1/batches", self.batches)
        app.router.add_get("/v1/batches/{id}", self.batch_get)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        app.router.add_post("/azure/openai/deployments/{dep}/chat/completions", self.chat)
        app.router.add_post("/gemini/models/{action}", self.gemini)
        app.router.add_post("/gemini/v1beta/models/{action}", self.gemini)  # the /gemini/* pass-through's paths
        app.router.add_post("/bedrock/model/{model}/{action}", self.bedrock)
        return app

    async def _record(self, request: web.Request) -> dict[str, Any]:
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            body = {
                k: (v if isinstance(v, str) else {"filename": v.filename, "size": len(v.file.read())})
                for k, v in form.items()
            }
        else:
            raw = await request.read()
            body = orjson.loads(raw) if raw else {}
        self.requests.append({"path": request.path_qs, "headers": dict(request.headers), "body": body})
        return body

    def last(self, path_part: str = "") -> dict[str, Any]:
        return next(r for r in reversed(self.requests) if path_part in r["path"])

    # --- OpenAI --------------------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        model = body.get("model", "")
        failure = _failure(model)
        if failure is not None:
            return failure
        if model == "slow":
            await asyncio.sleep(3)
        text = "echo: " + _last_user(body.get("messages"))
        if model == "leak-pii":
            text = LEAKED
        elif model == "llama-guard":
            text = "unsafe\nS1" if "attack" in _last_user(body.get("messages")) else "safe"
        tool_call = None
        if body.get("tools") and body.get("tool_choice") != "none" and body["messages"][-1].get("role") != "tool":
            fn = body["tools"][0]["function"]["name"]
            tool_call = {
                "id": "call_abc123",
                "type": "function",
                "function": {"name": fn, "arguments": '{"city": "Paris"}'},
            }
        base = {"id": "chatcmpl-up1", "created": 1700000000, "model": model, "system_fingerprint": "fp_up"}
        if body.get("stream"):
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            chunk = {**base, "object": "chat.completion.chunk"}
            with_usage = (body.get("stream_options") or {}).get("include_usage")
            await response.write(
                _sse(
                    {
                        **chunk,
                        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                    }
                )
            )
            count = 300 if model == "drip" else 3
            words = ["echo:", *_last_user(body.get("messages")).split()] if model != "drip" else []
            if model == "leak-pii":
                words = [LEAKED[i : i + 5] for i in range(0, len(LEAKED), 5)]
            for i in range(count if model == "drip" else len(words)):
                piece = f"tok{i} " if model == "drip" else (" " if i and model != "leak-pii" else "") + words[i]
                await response.write(
                    _sse({**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                )
                if model == "drip":
                    await asyncio.sleep(0.1)
            if model in ("break-stream", "reset-stream"):
                await asyncio.sleep(0.05)
                if model == "reset-stream":  # a TCP reset (RST), as a crashed server or a middlebox sends it
                    sock = request.transport.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    request.transport.abort()
                else:
                    request.transport.close()  # the upstream dies mid-stream (FIN)
                return response
            if tool_call:
                await response.write(
                    _sse(
                        {
                            **chunk,
                            "choices": [
                                {
                                    "index": 0,
                                    "delta": {"tool_calls": [{"index": 0, **tool_call}]},
                                    "finish_reason": None,
                                }
                            ],
                        }
                    )
                )
            await response.write(
                _sse(
                    {
                        **chunk,
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if tool_call else "stop"}],
                    }
                )
            )
            if with_usage:
                await response.write(
                    _sse(
                        {
                            **chunk,
                            "choices": [],
                            "usage": {
                                "prompt_tokens": PROMPT_TOKENS,
                                "completion_tokens": COMPLETION_TOKENS,
                                "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
                            },
                        }
                    )
                )
            await response.write(b"data: [DONE]\n\n")
            return response
        message: dict[str, Any] = {"role": "assistant", "content": None if tool_call else text}
        if tool_call:
            message["tool_calls"] = [tool_call]
        if (body.get("response_format") or {}).get("type") == "json_object":
            message["content"] = '{"answer": "json"}'
        return web.json_response(
            {
                **base,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_call else "stop"}],
                "usage": {
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": _completion_tokens(model, body),
                    "total_tokens": PROMPT_TOKENS + _completion_tokens(model, body),
                    "prompt_tokens_details": {"cached_tokens": 2},
                },
            }
        )

    async def completions(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        return web.json_response(
            {
                "id": "cmpl-up",
                "object": "text_completion",
                "created": 1700000000,
                "model": body.get("model"),
                "choices": [{"index": 0, "text": " completed", "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response(
            {
                "object": "list",
                "model": body.get("model"),
                "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))],
                "usage": {"prompt_tokens": 4 * len(inputs), "total_tokens": 4 * len(inputs)},
            }
        )

    async def responses(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        final = self._response(body)
        if body.get("stream"):
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            started = {**final, "status": "in_progress", "output": [], "usage": None}
            await response.write(
                _event("response.created", {"type": "response.created", "sequence_number": 0, "response": started})
            )
            pieces = ("responses", " ok") if body.get("model") != "leak-pii" else _pieces(LEAKED)
            for i, piece in enumerate(pieces):
                await response.write(
                    _event(
                        "response.output_text.delta",
                        {
                            "type": "response.output_text.delta",
                            "item_id": "msg_up",
                            "output_index": 0,
                            "content_index": 0,
                            "delta": piece,
                            "sequence_number": i + 1,
                            "logprobs": [],
                        },
                    )
                )
            if body.get("model") == "leak-pii":
                final["output"][0]["content"][0]["text"] = LEAKED
                done = {"type": "response.output_text.done", "item_id": "msg_up", "output_index": 0}
                await response.write(_event("response.output_text.done", {**done, "content_index": 0, "text": LEAKED}))
            await response.write(
                _event("response.completed", {"type": "response.completed", "sequence_number": 3, "response": final})
            )
            return response
        return web.json_response(final)

    @staticmethod
    def _response(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "resp_up",
            "object": "response",
            "created_at": 1700000000,
            "status": "completed",
            "model": body.get("model"),
            "output": [
                {
                    "type": "message",
                    "id": "msg_up",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "responses ok", "annotations": []}],
                }
            ],
            "usage": {
                "input_tokens": 5,
                "output_tokens": 2,
                "total_tokens": 7,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "error": None,
            "incomplete_details": None,
            "instructions": None,
            "metadata": {},
            "temperature": 1.0,
            "top_p": 1.0,
        }

    async def images(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        return web.json_response(
            {"created": 1700000000, "data": [{"url": "https://img.example/1.png"}] * int(body.get("n", 1))}
        )

    async def speech(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(body=b"ID3fake-mp3-bytes", content_type="audio/mpeg")

    async def transcriptions(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"text": "hello from audio", "duration": 2.5})

    async def moderations(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        failure = _failure(str(body.get("model", "")))
        if failure is not None:
            return failure
        attack = "attack" in str(body.get("input", ""))
        scores = {"violence": 0.93 if attack else 0.01, "hate": 0.02}
        return web.json_response(
            {
                "id": "modr-up",
                "model": body.get("model"),
                "results": [
                    {
                        "flagged": attack,
                        "categories": {k: v > 0.5 for k, v in scores.items()},
                        "category_scores": scores,
                    }
                ]
                if body.get("model") != "gpt-up"
                else [{"flagged": False, "categories": {}, "category_scores": {}}],
            }
        )

    async def rerank(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        return web.json_response(
            {
                "id": "rr",
                "results": [{"index": i, "relevance_score": 1.0 / (i + 1)} for i in range(len(body["documents"]))],
            }
        )

    async def files(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        return web.json_response(
            {
                "id": "file-up123",
                "object": "file",
                "bytes": body["file"]["size"],
                "created_at": 1700000000,
                "filename": body["file"]["filename"],
                "purpose": body.get("purpose", "batch"),
                "status": "processed",
            }
        )

    async def file_get(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response(
            {
                "id": request.match_info["id"],
                "object": "file",
                "bytes": 1,
                "created_at": 1,
                "filename": "x.jsonl",
                "purpose": "batch",
                "status": "processed",
            }
        )

    async def file_delete(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"id": request.match_info["id"], "object": "file", "deleted": True})

    async def batches(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        return web.json_response(self._batch("batch_up1", body.get("input_file_id")))

    async def batch_get(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response(self._batch(request.match_info["id"], "file-up123", output="file-out9"))

    @staticmethod
    def _batch(batch_id: str, input_file: str | None, output: str | None = None) -> dict[str, Any]:
        return {
            "id": batch_id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": None,
            "input_file_id": input_file,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": output,
            "error_file_id": None,
            "created_at": 1700000000,
            "request_counts": {"total": 2, "completed": 0, "failed": 0},
        }

    # --- Anthropic -----------------------------------------------------------------------------------
    async def count_tokens(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        return web.json_response({"input_tokens": 1000 + len(body.get("messages", []))})

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        model = body.get("model", "")
        failure = _failure(model)
        if failure is not None:
            return failure
        last = body["messages"][-1]
        blocks = last["content"] if isinstance(last["content"], list) else []
        wants_tool = (
            body.get("tools") and last["role"] == "user" and not any(b.get("type") == "tool_result" for b in blocks)
        )
        usage = {"input_tokens": 13, "output_tokens": 5, "cache_read_input_tokens": 3}
        if model == "uses-max-tokens":
            usage["output_tokens"] = body["max_tokens"]
        if body.get("stream"):
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            start = {
                "id": "msg_up",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {**usage, "output_tokens": 1},
            }
            await response.write(_event("message_start", {"type": "message_start", "message": start}))
            await response.write(
                _event(
                    "content_block_start",
                    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                )
            )
            pieces = ("Hello", " from", " Claude") if model != "leak-pii" else _pieces(LEAKED)
            for piece in pieces:
                await response.write(
                    _event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                    )
                )
            await response.write(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
            stop = "end_turn"
            if wants_tool:
                stop = "tool_use"
                await response.write(
                    _event(
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": 1,
                            "content_block": {
                                "type": "tool_use",
                                "id": "toolu_1",
                                "name": body["tools"][0]["name"],
                                "input": {},
                            },
                        },
                    )
                )
                for part in ('{"city": ', '"Paris"}'):
                    await response.write(
                        _event(
                            "content_block_delta",
                            {
                                "type": "content_block_delta",
                                "index": 1,
                                "delta": {"type": "input_json_delta", "partial_json": part},
                            },
                        )
                    )
                await response.write(_event("content_block_stop", {"type": "content_block_stop", "index": 1}))
            await response.write(
                _event(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop, "stop_sequence": None},
                        "usage": {"output_tokens": 5},
                    },
                )
            )
            await response.write(_event("message_stop", {"type": "message_stop"}))
            return response
        content: list[dict[str, Any]] = [{"type": "text", "text": "Hello from Claude"}]
        if wants_tool:
            content.append(
                {"type": "tool_use", "id": "toolu_1", "name": body["tools"][0]["name"], "input": {"city": "Paris"}}
            )
        return web.json_response(
            {
                "id": "msg_up",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": "tool_use" if wants_tool else "end_turn",
                "stop_sequence": None,
                "usage": usage,
            }
        )

    # --- Gemini -------------------------------------------------------------------------------------
    async def gemini(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        action = request.match_info["action"]
        if action.endswith(":batchEmbedContents"):
            return web.json_response({"embeddings": [{"values": [0.5, 0.25]} for _ in body["requests"]]})
        usage = {"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13}
        wants_tool = bool(body.get("tools"))
        parts: list[dict[str, Any]] = [{"text": "Hello from Gemini"}]
        if wants_tool:
            parts = [
                {
                    "functionCall": {
                        "name": body["tools"][0]["functionDeclarations"][0]["name"],
                        "args": {"city": "Paris"},
                    }
                }
            ]
        if ":streamGenerateContent" in action:
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            await response.write(_sse({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello"}]}}]}))
            await response.write(
                _sse(
                    {
                        "candidates": [
                            {"content": {"role": "model", "parts": [{"text": " from Gemini"}]}, "finishReason": "STOP"}
                        ],
                        "usageMetadata": usage,
                    }
                )
            )
            return response
        return web.json_response(
            {
                "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
                "usageMetadata": usage,
            }
        )

    # --- Bedrock ------------------------------------------------------------------------------------
    async def bedrock(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        usage = {"inputTokens": 8, "outputTokens": 3, "totalTokens": 11}
        if request.match_info["action"] == "converse-stream":
            response = web.StreamResponse(headers={"content-type": "application/vnd.amazon.eventstream"})
            await response.prepare(request)
            await response.write(eventstream_message("messageStart", {"role": "assistant"}))
            for piece in ("Hello", " from Bedrock"):
                await response.write(
                    eventstream_message("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
                )
            await response.write(eventstream_message("contentBlockStop", {"contentBlockIndex": 0}))
            await response.write(eventstream_message("messageStop", {"stopReason": "end_turn"}))
            await response.write(eventstream_message("metadata", {"usage": usage, "metrics": {"latencyMs": 5}}))
            return response
        return web.json_response(
            {
                "output": {"message": {"role": "assistant", "content": [{"text": "Hello from Bedrock"}]}},
                "stopReason": "end_turn",
                "usage": usage,
                "metrics": {"latencyMs": 5},
            }
        )
