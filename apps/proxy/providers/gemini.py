"""Google Gemini (Generative Language API): chat with tools and streaming, embeddings."""

from __future__ import annotations

import time
import uuid
from typing import Any

import aiohttp
import orjson

from apps.proxy.errors import UpstreamError
from apps.proxy.providers.anthropic_format import _arguments, _text_of
from apps.proxy.providers.base import (
    Adapter,
    Call,
    Chunk,
    HttpRequest,
    Reply,
    Usage,
    json_or_502,
)
from apps.proxy.providers.shapes import chat_completion, embedding_vector, openai_usage
from apps.proxy.registry import Deployment

DEFAULT_BASE = "https://generativelanguage.googleapis.com/v1beta"
FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter"}


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str) or content is None:
        return [{"text": content or ""}]
    parts = []
    for part in content:
        if part.get("type") == "text":
            parts.append({"text": part.get("text", "")})
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if url.startswith("data:") and ";base64," in url:
                mime, data = url[5:].split(";base64,", 1)
                parts.append({"inline_data": {"mime_type": mime, "data": data}})
            else:
                parts.append({"file_data": {"file_uri": url}})
    return parts


def chat_to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    contents: list[dict[str, Any]] = []
    system: list[str] = []
    tool_names: dict[str, str] = {}
    for message in body.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content")))
        elif role == "user":
            contents.append({"role": "user", "parts": _parts(message.get("content"))})
        elif role == "assistant":
            parts = [{"text": t} for t in [_text_of(message.get("content"))] if t]
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                tool_names[call.get("id", "")] = fn.get("name", "")
                parts.append({"functionCall": {"name": fn.get("name"), "args": _arguments(fn.get("arguments"))}})
            contents.append({"role": "model", "parts": parts or [{"text": ""}]})
        elif role == "tool":
            name = tool_names.get(message.get("tool_call_id", ""), message.get("name", "tool"))
            response = {"content": _text_of(message.get("content"))}
            contents.append({"role": "user", "parts": [{"functionResponse": {"name": name, "response": response}}]})
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config: dict[str, Any] = {}
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("n", "candidateCount")):
        if body.get(src) is not None:
            config[dst] = body[src]
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    if max_tokens:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if (body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if config:
        out["generationConfig"] = config
    tools = [t["function"] for t in body.get("tools") or [] if t.get("type") == "function" and t.get("function")]
    if tools:
        out["tools"] = [
            {
                "functionDeclarations": [
                    {
                        k: v
                        for k, v in (
                            ("name", f.get("name")),
                            ("description", f.get("description")),
                            ("parameters", f.get("parameters")),
                        )
                        if v
                    }
                    for f in tools
                ]
            }
        ]
    return out


def _usage(usage: Usage, meta: dict[str, Any] | None) -> None:
    if meta:
        usage.prompt_tokens = int(meta.get("promptTokenCount") or 0)
        usage.completion_tokens = int(meta.get("candidatesTokenCount") or 0) + int(meta.get("thoughtsTokenCount") or 0)
        usage.cached_tokens = int(meta.get("cachedContentTokenCount") or 0)
        usage.reported = True


def _message(candidate: dict[str, Any], tool_offset: int = 0) -> tuple[str, list[dict[str, Any]]]:
    text, calls = [], []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "text" in part and not part.get("thought"):
            text.append(part["text"])
        elif "functionCall" in part:
            fc = part["functionCall"]
            calls.append(
                {
                    "index": tool_offset + len(calls),
                    "id": "call_" + uuid.uuid4().hex[:24],
                    "type": "function",
                    "function": {"name": fc.get("name"), "arguments": orjson.dumps(fc.get("args") or {}).decode()},
                }
            )
    return "".join(text), calls


class GeminiAdapter(Adapter):
    name = "gemini"
    ops = frozenset({"chat", "embeddings"})

    def prepare(self, dep: Deployment, call: Call) -> HttpRequest:
        base = dep.api_base or DEFAULT_BASE
        headers = {"x-goog-api-key": dep.api_key, "content-type": "application/json"}
        if call.op == "embeddings":
            inputs = call.body.get("input")
            inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
            body = {
                "requests": [{"model": f"models/{dep.model}", "content": {"parts": [{"text": str(t)}]}} for t in inputs]
            }
            return HttpRequest("POST", f"{base}/models/{dep.model}:batchEmbedContents", headers, orjson.dumps(body))
        action = "streamGenerateContent?alt=sse" if call.stream else "generateContent"
        return HttpRequest(
            "POST", f"{base}/models/{dep.model}:{action}", headers, orjson.dumps(chat_to_gemini(call.body))
        )

    def error_for(self, dep: Deployment, status: int, raw: bytes, headers) -> UpstreamError:
        # Google answers a wrong or expired API key with 400 INVALID_ARGUMENT (reason API_KEY_INVALID), not 401.
        # The client's request was fine: it is the deployment's credentials (502, another deployment may work),
        # and "API key not valid" must not reach a client whose own key is valid.
        if status == 400 and (b"API_KEY_INVALID" in raw or b"API_KEY_EXPIRED" in raw):
            status = 401
        return super().error_for(dep, status, raw, headers)

    def parse(self, dep: Deployment, call: Call, raw: bytes, content_type: str) -> Reply:
        obj = json_or_502(raw, self.name)
        obj = obj if isinstance(obj, dict) else {}
        usage = Usage()
        model = str(call.body.get("model", dep.model_name))
        if call.op == "embeddings":
            encoding = call.body.get("encoding_format")
            data = [
                {"object": "embedding", "index": i, "embedding": embedding_vector(e.get("values", []), encoding)}
                for i, e in enumerate(obj.get("embeddings") or [])
            ]
            usage.prompt_tokens = sum(len(str(t)) for t in (call.body.get("input") or [])) // 4
            out = {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
            }
            return Reply(body=orjson.dumps(out), usage=usage, obj=out)
        _usage(usage, obj.get("usageMetadata"))
        choices = []
        for i, candidate in enumerate(obj.get("candidates") or []):
            text, calls = _message(candidate)
            message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
            if calls:
                message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
            finish = "tool_calls" if calls else FINISH.get(candidate.get("finishReason", "STOP"), "stop")
            choices.append({"index": i, "message": message, "finish_reason": finish, "logprobs": None})
        out = chat_completion(model, choices, openai_usage(usage.prompt_tokens, usage.completion_tokens))
        return Reply(body=orjson.dumps(out), usage=usage, obj=out)

    async def stream_chunks(self, dep: Deployment, call: Call, response: aiohttp.ClientResponse, usage: Usage):
        model = str(call.body.get("model", dep.model_name))
        base = {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        yield Chunk(
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        )
        tools = 0
        async for _name, data in self.sse(response):
            obj = json_or_502(data, self.name)
            if not isinstance(obj, dict):
                continue
            error = obj.get("error")
            if error:  # reported inside the stream: an error event for the client, never a silently short answer
                message = error.get("message") if isinstance(error, dict) else error
                raise UpstreamError(502, str(message or "upstream stream error"), llm_provider=self.name)
            _usage(usage, obj.get("usageMetadata"))
            for candidate in obj.get("candidates") or []:
                text, calls = _message(candidate, tools)
                tools += len(calls)
                delta: dict[str, Any] = {}
                if text:
                    delta["content"] = text
                if calls:
                    delta["tool_calls"] = calls
                finish = candidate.get("finishReason")
                finish_reason = ("tool_calls" if tools else FINISH.get(finish, "stop")) if finish else None
                if delta or finish_reason:
                    yield Chunk({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})
        if call.include_usage:
            yield Chunk({**base, "choices": [], "usage": openai_usage(usage.prompt_tokens, usage.completion_tokens)})
