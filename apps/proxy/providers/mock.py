"""The built-in mock provider: answers locally, no HTTP. For the demo, the embedded default and tests.

Deployment ``extra`` options: ``mock_response`` (fixed text), ``mock_latency_ms``, ``mock_error``
(an HTTP status to fail with, e.g. 429 or 503), ``mock_retry_after``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from typing import Any

import orjson

from apps.proxy.errors import GatewayError
from apps.proxy.providers.base import (
    SHAPE_ERRORS,
    Adapter,
    Call,
    Chunk,
    Reply,
    StreamReply,
    Usage,
    upstream_error,
)
from apps.proxy.providers.mock_files import MockFilesMixin
from apps.proxy.providers.shapes import chat_completion, embedding_vector, openai_usage
from apps.proxy.registry import Deployment
from apps.proxy.tokens import estimate_prompt_tokens, estimate_text_tokens

# 1x1 transparent PNG for image generation.
PNG_1PX = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


# What a client may ask the mock to build in the worker's memory (the real APIs' own limits).
MAX_IMAGES = 10
MAX_DIMENSIONS = 4096


def _bounded(value: Any, name: str, maximum: int) -> int:
    """A count the mock will materialise: 400 outside 1..maximum (n=10**18 would hang and exhaust the worker)."""
    number = int(value)
    if not 1 <= number <= maximum:
        raise GatewayError(400, f"'{name}' must be between 1 and {maximum}.", param=name, kind="bad_request")
    return number


def _reply_text(dep: Deployment, body: dict[str, Any]) -> str:
    if dep.extra.get("mock_response"):
        return str(dep.extra["mock_response"])
    last = ""
    for message in body.get("messages") or []:
        if message.get("role") == "user":
            content = message.get("content")
            last = (
                content
                if isinstance(content, str)
                else " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
            )
    return f"This is a mock response to: {last[:200]}" if last else "This is a mock response."


def _vector(text: str, dims: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest() * (dims // 32 + 1)
    return [round(b / 255 - 0.5, 6) for b in digest[:dims]]


class MockAdapter(MockFilesMixin, Adapter):
    name = "mock"
    ops = frozenset(
        {
            "chat",
            "completions",
            "embeddings",
            "responses",
            "images",
            "audio_speech",
            "audio_transcriptions",
            "moderations",
            "rerank",
            "files_create",
            "files_get",
            "files_content",
            "files_delete",
            "batches_create",
            "batches_get",
            "batches_cancel",
            "batches_list",
        }
    )

    def __init__(self) -> None:
        self._files: dict[str, dict[str, Any]] = {}
        self._batches: dict[str, dict[str, Any]] = {}

    async def send(self, session, dep: Deployment, call: Call, timeout: float):
        latency = float(dep.extra.get("mock_latency_ms", 0) or 0)
        if latency:
            await asyncio.sleep(latency / 1000)
        call.responded_at = time.perf_counter()  # a real upstream's response head arrives here
        if dep.extra.get("mock_error"):
            headers = {"retry-after": str(dep.extra["mock_retry_after"])} if dep.extra.get("mock_retry_after") else {}
            raise upstream_error(
                self.name, int(dep.extra["mock_error"]), b'{"error": {"message": "mock failure"}}', headers
            )
        model = str(call.body.get("model") or dep.model_name)
        if call.stream and call.op != "chat":
            raise GatewayError(400, "The mock provider streams chat completions only.", kind="bad_request")
        try:
            if call.op == "chat" and call.stream:
                return self._stream(dep, call, model)
            obj, usage = getattr(self, "_" + call.op)(dep, call, model)
        except SHAPE_ERRORS as exc:
            raise GatewayError(400, f"The request body has an unexpected shape ({type(exc).__name__}).") from None
        if isinstance(obj, bytes):
            content_type = b"audio/mpeg" if call.op == "audio_speech" else b"application/octet-stream"
            return Reply(body=obj, usage=usage, content_type=content_type)
        return Reply(body=orjson.dumps(obj), usage=usage, obj=obj)

    def _tool_call(self, body: dict[str, Any]) -> dict[str, Any] | None:
        tools = body.get("tools") or []
        choice = body.get("tool_choice")
        messages = body.get("messages") or []
        if not tools or choice == "none" or (messages and messages[-1].get("role") == "tool"):
            return None
        if choice in (None, "auto") and "tool" not in str(messages[-1].get("content", "")).lower():
            return None
        name = tools[0].get("function", {}).get("name")
        if isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name", name)
        return {
            "id": "call_" + uuid.uuid4().hex[:24],
            "type": "function",
            "function": {"name": name, "arguments": '{"mock": true}'},
        }

    def _chat(self, dep: Deployment, call: Call, model: str):
        text = _reply_text(dep, call.body)
        usage = Usage(estimate_prompt_tokens(call.body), estimate_text_tokens(text), reported=True)
        tool_call = self._tool_call(call.body)
        message: dict[str, Any] = {"role": "assistant", "content": None if tool_call else text, "refusal": None}
        if tool_call:
            message["tool_calls"] = [tool_call]
            usage.completion_tokens = 8
        choices = [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if tool_call else "stop",
            }
        ]
        usage_obj = openai_usage(usage.prompt_tokens, usage.completion_tokens)
        obj = chat_completion(model, choices, usage_obj, system_fingerprint="fp_mock")
        return obj, usage

    def _stream(self, dep: Deployment, call: Call, model: str) -> StreamReply:
        usage = Usage(estimate_prompt_tokens(call.body), reported=True)
        text = _reply_text(dep, call.body)
        delay = float(dep.extra.get("mock_chunk_delay_ms", 0) or 0) / 1000

        async def chunks():
            base = {
                "id": "chatcmpl-" + uuid.uuid4().hex,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": "fp_mock",
            }
            yield Chunk(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                }
            )
            tool_call = self._tool_call(call.body)
            if tool_call:
                yield Chunk(
                    {
                        **base,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"tool_calls": [{"index": 0, **tool_call}]},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ],
                    }
                )
                usage.completion_tokens = 8
            else:
                for i, word in enumerate(text.split(" ")):
                    if delay:
                        await asyncio.sleep(delay)
                    usage.completion_tokens += 1
                    yield Chunk(
                        {
                            **base,
                            "choices": [
                                {
                                    "index": 0,
                                    "delta": {"content": (" " if i else "") + word},
                                    "logprobs": None,
                                    "finish_reason": None,
                                }
                            ],
                        }
                    )
            yield Chunk(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {},
                            "logprobs": None,
                            "finish_reason": "tool_calls" if tool_call else "stop",
                        }
                    ],
                }
            )
            if call.include_usage:
                yield Chunk(
                    {
                        **base,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": usage.prompt_tokens,
                            "completion_tokens": usage.completion_tokens,
                            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
                        },
                    }
                )

        return StreamReply(chunks=chunks(), usage=usage)

    def _completions(self, dep: Deployment, call: Call, model: str):
        prompt = call.body.get("prompt")
        text = str(dep.extra.get("mock_response") or f"This is a mock completion of: {str(prompt)[:200]}")
        usage = Usage(estimate_text_tokens(str(prompt)), estimate_text_tokens(text), reported=True)
        return {
            "id": "cmpl-" + uuid.uuid4().hex,
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            },
        }, usage

    def _embeddings(self, dep: Deployment, call: Call, model: str):
        inputs = call.body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        dims = _bounded(
            call.body.get("dimensions") or dep.extra.get("mock_dimensions", 8), "dimensions", MAX_DIMENSIONS
        )
        data = []
        for i, text in enumerate(inputs):
            vector = embedding_vector(_vector(str(text), dims), call.body.get("encoding_format"))
            data.append({"object": "embedding", "index": i, "embedding": vector})
        usage = Usage(sum(estimate_text_tokens(str(t)) for t in inputs), reported=True)
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
        }, usage

    def _responses(self, dep: Deployment, call: Call, model: str):
        source = call.body.get("input")
        text = str(dep.extra.get("mock_response") or f"This is a mock response to: {str(source)[:200]}")
        usage = Usage(estimate_text_tokens(str(source)), estimate_text_tokens(text), reported=True)
        return {
            "id": "resp_" + uuid.uuid4().hex,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": model,
            "output": [
                {
                    "type": "message",
                    "id": "msg_" + uuid.uuid4().hex,
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "usage": {
                "input_tokens": usage.prompt_tokens,
                "output_tokens": usage.completion_tokens,
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
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
        }, usage

    def _images(self, dep: Deployment, call: Call, model: str):
        n = _bounded(call.body.get("n") or 1, "n", MAX_IMAGES)
        return {
            "created": int(time.time()),
            "data": [{"b64_json": PNG_1PX, "revised_prompt": call.body.get("prompt")} for _ in range(n)],
        }, Usage(images=n, reported=True)

    def _audio_speech(self, dep: Deployment, call: Call, model: str):
        text = str(call.body.get("input", ""))
        return b"ID3mock-audio:" + text[:64].encode(), Usage(characters=len(text), reported=True)

    def _audio_transcriptions(self, dep: Deployment, call: Call, model: str):
        size = sum(len(part[3]) for part in call.form or [] if part[0] == "file")
        return {"text": "This is a mock transcription.", "duration": round(size / 16000, 3)}, Usage(
            audio_seconds=size / 16000, reported=True
        )

    def _moderations(self, dep: Deployment, call: Call, model: str):
        inputs = call.body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        results = [
            {
                "flagged": False,
                "categories": {"hate": False, "violence": False},
                "category_scores": {"hate": 0.0, "violence": 0.0},
            }
            for _ in inputs
        ]
        return {"id": "modr-" + uuid.uuid4().hex, "model": model, "results": results}, Usage(reported=True)

    def _rerank(self, dep: Deployment, call: Call, model: str):
        query = set(str(call.body.get("query", "")).lower().split())
        documents = call.body.get("documents") or []
        scored = []
        for i, doc in enumerate(documents):
            text = doc if isinstance(doc, str) else str((doc or {}).get("text", ""))
            words = set(text.lower().split())
            scored.append({"index": i, "relevance_score": round(len(query & words) / (len(query) or 1), 4)})
        scored.sort(key=lambda r: -r["relevance_score"])
        top_n = call.body.get("top_n")
        return {
            "id": uuid.uuid4().hex,
            "model": model,
            "results": scored[: int(top_n)] if top_n else scored,
            "usage": {"total_tokens": 0},
        }, Usage(reported=True)
