"""Anthropic Messages requests served by OpenAI-shaped providers: the reverse translation."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from apps.proxy.providers.anthropic_format import STOP_TO_ANTHROPIC


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def messages_to_chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages body as an OpenAI chat body (unknown top-level fields are dropped)."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _content_text(system)})
    for message in body.get("messages") or []:
        role = message.get("role")
        content = message.get("content")
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            continue
        parts: list[dict[str, Any]] = []
        tool_calls: list[dict[str, Any]] = []
        for block in content or []:
            kind = block.get("type")
            if kind == "text":
                parts.append({"type": "text", "text": block.get("text", "")})
            elif kind == "image":
                source = block.get("source") or {}
                if source.get("type") == "base64":
                    url = f"data:{source.get('media_type')};base64,{source.get('data')}"
                else:
                    url = source.get("url", "")
                parts.append({"type": "image_url", "image_url": {"url": url}})
            elif kind == "tool_use":
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
            elif kind == "tool_result":
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": block.get("tool_use_id"),
                        "content": _content_text(block.get("content")),
                    }
                )
        if role == "assistant":
            text = "".join(p.get("text", "") for p in parts if p["type"] == "text")
            out: dict[str, Any] = {"role": "assistant", "content": text or None}
            if tool_calls:
                out["tool_calls"] = tool_calls
            messages.append(out)
        elif parts:
            only_text = all(p["type"] == "text" for p in parts)
            messages.append({"role": role, "content": "".join(p["text"] for p in parts) if only_text else parts})
    out_body: dict[str, Any] = {"model": body.get("model"), "messages": messages, "max_tokens": body.get("max_tokens")}
    for key in ("temperature", "top_p", "stream"):
        if body.get(key) is not None:
            out_body[key] = body[key]
    if body.get("stop_sequences"):
        out_body["stop"] = body["stop_sequences"]
    if body.get("stream"):
        out_body["stream_options"] = {"include_usage": True}
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        out_body["user"] = user
    if body.get("tools"):
        out_body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name"),
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema"),
                },
            }
            for t in body["tools"]
        ]
        choice = body.get("tool_choice") or {}
        mapping = {"auto": "auto", "any": "required", "none": "none"}
        if choice.get("type") == "tool":
            out_body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        elif choice.get("type") in mapping:
            out_body["tool_choice"] = mapping[choice["type"]]
    return out_body


def chat_to_messages_response(obj: dict[str, Any], model: str) -> dict[str, Any]:
    choice = (obj.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        try:
            arguments = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": arguments})
    usage = obj.get("usage") or {}
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_TO_ANTHROPIC.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": int(usage.get("prompt_tokens") or 0),
            "output_tokens": int(usage.get("completion_tokens") or 0),
        },
    }


class ChatToMessagesStream:
    """OpenAI chat chunks -> Anthropic stream events as (name, payload) pairs."""

    def __init__(self, model: str, prompt_estimate: int) -> None:
        self.model = model
        self.prompt_estimate = prompt_estimate
        self.started = False
        self.block = -1
        self.block_kind: str | None = None
        self.tools_seen: dict[int, int] = {}
        self.finish: str | None = None
        self.usage: dict[str, int] = {}

    def _start(self) -> list[tuple[str, dict[str, Any]]]:
        self.started = True
        message = {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.prompt_estimate, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _open(self, kind: str, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events = self._close()
        self.block += 1
        self.block_kind = kind
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": self.block, "content_block": block})
        )
        return events

    def _close(self) -> list[tuple[str, dict[str, Any]]]:
        if self.block_kind is None:
            return []
        self.block_kind = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.block})]

    def chunk(self, obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        events = [] if self.started else self._start()
        if obj.get("usage"):
            self.usage = obj["usage"]
        for choice in obj.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.block_kind != "text":
                    events += self._open("text", {"type": "text", "text": ""})
                events.append(
                    (
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": self.block,
                            "delta": {"type": "text_delta", "text": delta["content"]},
                        },
                    )
                )
            for call in delta.get("tool_calls") or []:
                index = call.get("index", 0)
                fn = call.get("function") or {}
                if index not in self.tools_seen:
                    events += self._open(
                        "tool",
                        {
                            "type": "tool_use",
                            "id": call.get("id") or f"toolu_{index}",
                            "name": fn.get("name"),
                            "input": {},
                        },
                    )
                    self.tools_seen[index] = self.block
                if fn.get("arguments"):
                    events.append(
                        (
                            "content_block_delta",
                            {
                                "type": "content_block_delta",
                                "index": self.tools_seen[index],
                                "delta": {"type": "input_json_delta", "partial_json": fn["arguments"]},
                            },
                        )
                    )
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return events

    def end(self) -> list[tuple[str, dict[str, Any]]]:
        events = [] if self.started else self._start()
        events += self._close()
        output = int(self.usage.get("completion_tokens") or 0)
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": STOP_TO_ANTHROPIC.get(self.finish or "stop", "end_turn"),
                        "stop_sequence": None,
                    },
                    "usage": {"output_tokens": output},
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events
