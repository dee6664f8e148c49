"""OpenAI chat <-> Anthropic Messages, both directions, for requests, responses and streams.

Used two ways: the Anthropic adapter serves ``/v1/chat/completions`` from Claude (OpenAI -> Anthropic
request, Anthropic -> OpenAI response/chunks), and ``/v1/messages`` is served from any other provider
(Anthropic -> OpenAI request, OpenAI -> Anthropic response/events).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from apps.proxy.providers.shapes import append_turn, chat_completion, openai_usage

STOP_TO_OPENAI = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls", "stop_sequence": "stop"}
STOP_TO_ANTHROPIC = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use"}
DEFAULT_MAX_TOKENS = 4096


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)


def _image_block(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str) or content is None:
        return [{"type": "text", "text": content or ""}]
    blocks = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            blocks.append(_image_block(image.get("url", "") if isinstance(image, dict) else str(image)))
    return blocks


def _arguments(raw: Any) -> Any:
    if isinstance(raw, dict):
        return raw
    try:
        value = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"value": value}


def chat_to_messages_request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat body as an Anthropic Messages body."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []

    for message in body.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content")))
        elif role == "user":
            append_turn(messages, "user", _user_blocks(message.get("content")))
        elif role == "assistant":
            blocks = []
            text = _text_of(message.get("content"))
            if text:
                blocks.append({"type": "text", "text": text})
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": fn.get("name"),
                        "input": _arguments(fn.get("arguments")),
                    }
                )
            append_turn(messages, "assistant", blocks or [{"type": "text", "text": ""}])
        elif role == "tool":
            append_turn(
                messages,
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": message.get("tool_call_id"),
                        "content": _text_of(message.get("content")),
                    }
                ],
            )
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = "\n\n".join(s for s in system if s)
    for src, dst in (("temperature", "temperature"), ("top_p", "top_p"), ("stream", "stream")):
        if body.get(src) is not None:
            out[dst] = body[src]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    tools = body.get("tools")
    if tools:
        out["tools"] = [
            {
                "name": t["function"].get("name"),
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}},
            }
            for t in tools
            if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
        ]
        choice = body.get("tool_choice")
        if choice == "required":
            out["tool_choice"] = {"type": "any"}
        elif choice == "none":
            out["tool_choice"] = {"type": "none"}
        elif isinstance(choice, dict) and choice.get("type") == "function":
            out["tool_choice"] = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
        elif choice == "auto":
            out["tool_choice"] = {"type": "auto"}
    return out


def messages_usage(usage: dict[str, Any] | None) -> tuple[int, int, int]:
    """(prompt incl. cache reads/writes, completion, cached) from Anthropic usage."""
    usage = usage or {}
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cached + int(usage.get("cache_creation_input_tokens") or 0)
    return prompt, int(usage.get("output_tokens") or 0), cached


def cache_write_tokens(usage: dict[str, Any] | None) -> int:
    """Anthropic's prompt-cache writes: counted in the prompt (as clients see it), billed at their own rate."""
    return int((usage or {}).get("cache_creation_input_tokens") or 0)


def messages_to_chat_response(obj: dict[str, Any], model: str) -> dict[str, Any]:
    text = []
    tool_calls = []
    for block in obj.get("content") or []:
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    prompt, completion, cached = messages_usage(obj.get("usage"))
    choices = [
        {
            "index": 0,
            "message": message,
            "finish_reason": STOP_TO_OPENAI.get(obj.get("stop_reason") or "end_turn", "stop"),
            "logprobs": None,
        }
    ]
    return chat_completion(model, choices, openai_usage(prompt, completion, cached), id=obj.get("id"))


class MessagesToChatStream:
    """Anthropic stream events -> OpenAI chat chunks."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.tool_index = -1
        self.block_is_tool: dict[int, int] = {}
        self.prompt = self.completion = self.cached = 0
        self.finish: str | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return chunk

    def event(self, name: str | None, data: dict[str, Any]) -> list[dict[str, Any]]:
        kind = data.get("type", name)
        if kind == "message_start":
            message = data.get("message") or {}
            self.prompt, self.completion, self.cached = messages_usage(message.get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                self.tool_index += 1
                self.block_is_tool[data.get("index", 0)] = self.tool_index
                call = {
                    "index": self.tool_index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return [self._chunk({"tool_calls": [call]})]
            if block.get("type") == "text" and block.get("text"):
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                index = self.block_is_tool.get(data.get("index", 0), max(self.tool_index, 0))
                return [
                    self._chunk(
                        {"tool_calls": [{"index": index, "function": {"arguments": delta.get("partial_json", "")}}]}
                    )
                ]
            return []
        if kind == "message_delta":
            usage = data.get("usage") or {}
            if usage.get("output_tokens") is not None:
                self.completion = int(usage["output_tokens"])
            if usage.get("input_tokens"):
                self.prompt, _, self.cached = messages_usage(usage)
            self.finish = STOP_TO_OPENAI.get((data.get("delta") or {}).get("stop_reason") or "end_turn", "stop")
            return [self._chunk({}, self.finish)]
        if kind == "message_stop" and self.include_usage:
            chunk = self._chunk({})
            chunk["choices"] = []
            chunk["usage"] = openai_usage(self.prompt, self.completion, self.cached)
            return [chunk]
        return []
