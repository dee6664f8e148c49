"""A cached answer: stored as one JSON document, replayed whole or as a stream.

An entry holds the answer as the client's whole-body shape (an OpenAI ``chat.completion``,
``text_completion`` or embeddings ``list``), byte for byte what the upstream sent when it came from a
whole-body call, or assembled from the chunks when it came from a stream (``StreamAssembler``). A
streaming request that hits is answered by ``replay_stream``: a role chunk, the content, the tool calls,
the finish chunk, the usage chunk when the client asked for ``include_usage``, then ``[DONE]``, which
the SDKs' stream parsers read like any other stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from apps.proxy.relay import DONE

VERSION = 1


@dataclass(frozen=True, slots=True)
class Entry:
    body: bytes  # the whole-body answer (JSON)
    cost: Decimal  # what the upstream's answer cost: a hit's cost_saved
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "v": VERSION,
                "body": self.body.decode("utf-8", "replace"),
                "cost": str(self.cost),
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> Entry | None:
        """The entry, or None for anything unreadable (another version, a damaged value): a miss."""
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict) or data.get("v") != VERSION or not isinstance(data.get("body"), str):
                return None
            return cls(
                body=data["body"].encode(),
                cost=Decimal(str(data.get("cost", "0"))),
                prompt_tokens=int(data.get("prompt_tokens") or 0),
                completion_tokens=int(data.get("completion_tokens") or 0),
            )
        except (orjson.JSONDecodeError, InvalidOperation, TypeError, ValueError):
            return None


class StreamAssembler:
    """Builds the whole-body answer from a chat or completions stream's chunks while they are relayed.

    ``result()`` is None when the stream cannot stand for a whole answer: a choice without its finish
    reason (cut short), log probabilities (not assembled), or more than ``max_bytes`` of text.
    """

    def __init__(self, op: str, max_bytes: int) -> None:
        self.op = op
        self.max_bytes = max_bytes
        self.size = 0
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, Any] | None = None
        self.usable = True

    def add(self, obj: dict[str, Any]) -> None:
        if not self.usable:
            return
        if not self.head and obj.get("id"):
            self.head = {name: obj[name] for name in ("id", "created", "model", "system_fingerprint") if name in obj}
        if isinstance(obj.get("usage"), dict):
            self.usage = obj["usage"]
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                self.usable = False
                return
            if choice.get("logprobs") is not None:
                self.usable = False  # not assembled: such a request is never answered from a stream's entry
                return
            index = choice.get("index", 0)
            slot = self.choices.setdefault(index, {"role": "assistant", "text": [], "refusal": [], "tools": {}})
            if choice.get("finish_reason"):
                slot["finish_reason"] = choice["finish_reason"]
            if self.op == "completions":
                self._text(slot, choice.get("text"))
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("role"), str):
                slot["role"] = delta["role"]
            self._text(slot, delta.get("content"))
            if isinstance(delta.get("refusal"), str):
                slot["refusal"].append(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                tool = slot["tools"].setdefault(
                    call.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
                if call.get("id"):
                    tool["id"] = call["id"]
                if call.get("type"):
                    tool["type"] = call["type"]
                function = call.get("function") or {}
                if function.get("name"):
                    tool["function"]["name"] += function["name"]
                if function.get("arguments"):
                    tool["function"]["arguments"] += function["arguments"]
                    self._grow(len(function["arguments"]))

    def _text(self, slot: dict[str, Any], text: Any) -> None:
        if isinstance(text, str) and text:
            slot["text"].append(text)
            self._grow(len(text))

    def _grow(self, size: int) -> None:
        self.size += size
        if self.size > self.max_bytes:
            self.usable = False
            self.choices = {}

    def result(self, usage: dict[str, Any]) -> bytes | None:
        """The assembled answer with ``usage`` (the stream's own, complete once it ended)."""
        if not self.usable or not self.choices or any("finish_reason" not in c for c in self.choices.values()):
            return None
        choices = []
        for index in sorted(self.choices):
            slot = self.choices[index]
            text = "".join(slot["text"])
            if self.op == "completions":
                choices.append({"index": index, "text": text, "finish_reason": slot["finish_reason"], "logprobs": None})
                continue
            message: dict[str, Any] = {"role": slot["role"], "content": text if text or not slot["tools"] else None}
            if slot["refusal"]:
                message["refusal"] = "".join(slot["refusal"])
            if slot["tools"]:
                message["tool_calls"] = [slot["tools"][i] for i in sorted(slot["tools"])]
            choices.append(
                {"index": index, "message": message, "finish_reason": slot["finish_reason"], "logprobs": None}
            )
        answer = {
            "id": self.head.get("id", ""),
            "object": "text_completion" if self.op == "completions" else "chat.completion",
            "created": self.head.get("created", 0),
            "model": self.head.get("model", ""),
            "choices": choices,
            "usage": self.usage or usage,
        }
        if "system_fingerprint" in self.head:
            answer["system_fingerprint"] = self.head["system_fingerprint"]
        return orjson.dumps(answer)


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def replay_stream(op: str, body: bytes, include_usage: bool) -> bytes | None:
    """The whole answer ``body`` as a complete SSE stream (chat or completions), or None when it is not
    an answer of that shape (then the hit is served as a miss)."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        return None
    base: dict[str, Any] = {
        "id": answer.get("id", ""),
        "object": "text_completion" if op == "completions" else "chat.completion.chunk",
        "created": answer.get("created", 0),
        "model": answer.get("model", ""),
    }
    if "system_fingerprint" in answer:
        base["system_fingerprint"] = answer["system_fingerprint"]
    out = []
    for choice in answer["choices"]:
        if not isinstance(choice, dict):
            return None
        index, finish = choice.get("index", 0), choice.get("finish_reason")
        if op == "completions":
            text = choice.get("text") or ""
            out.append(
                _sse({**base, "choices": [{"index": index, "text": text, "finish_reason": None, "logprobs": None}]})
            )
            out.append(
                _sse({**base, "choices": [{"index": index, "text": "", "finish_reason": finish, "logprobs": None}]})
            )
            continue
        message = choice.get("message")
        if not isinstance(message, dict):
            return None
        content = message.get("content")
        first: dict[str, Any] = {"role": message.get("role") or "assistant"}
        if isinstance(content, str):
            first["content"] = ""
        out.append(_sse({**base, "choices": [{"index": index, "delta": first, "finish_reason": None}]}))
        if isinstance(content, str) and content:
            out.append(
                _sse({**base, "choices": [{"index": index, "delta": {"content": content}, "finish_reason": None}]})
            )
        if message.get("refusal"):
            delta = {"refusal": message["refusal"]}
            out.append(_sse({**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}))
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            delta = {"tool_calls": [{"index": i, **call} for i, call in enumerate(calls) if isinstance(call, dict)]}
            out.append(_sse({**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]}))
        out.append(_sse({**base, "choices": [{"index": index, "delta": {}, "finish_reason": finish}]}))
    if include_usage and isinstance(answer.get("usage"), dict):
        out.append(_sse({**base, "choices": [], "usage": answer["usage"]}))
    out.append(DONE)
    return b"".join(out)
