"""Where the text of a request and of an answer lives, per route, as places that can be read and rewritten.

A ``Slot`` is a (container, key) pair: ``slot.get()`` reads a string, ``slot.set()`` replaces it in the
parsed body, so masking rewrites exactly the text fields and leaves roles, tool calls, images and
every other field as the client sent them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

GUARDED_OPS = frozenset({"chat", "completions", "messages", "responses", "embeddings", "images"})


class Slot:
    __slots__ = ("container", "key")

    def __init__(self, container: Any, key: Any) -> None:
        self.container, self.key = container, key

    def get(self) -> str:
        return self.container[self.key]

    def set(self, value: str) -> None:
        self.container[self.key] = value


def _content(container: Any, key: Any) -> Iterator[Slot]:
    """A message's content: a string, or a list of parts whose text parts carry ``text``."""
    value = container.get(key) if isinstance(container, dict) else None
    if isinstance(value, str):
        yield Slot(container, key)
    elif isinstance(value, list):
        for part in value:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield Slot(part, "text")
            elif isinstance(part, dict) and isinstance(part.get("content"), str | list):
                yield from _content(part, "content")  # tool results, Responses input items


def _strings(container: dict, key: str) -> Iterator[Slot]:
    value = container.get(key)
    if isinstance(value, str):
        yield Slot(container, key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str):
                yield Slot(value, i)


def request_slots(op: str, body: dict[str, Any]) -> list[Slot]:
    """The text fields of a request body the guardrails read (and may mask)."""
    slots: list[Slot] = []
    if op in ("chat", "messages"):
        for message in body.get("messages") or ():
            slots.extend(_content(message, "content"))
        if op == "messages":
            slots.extend(_content(body, "system"))
    elif op == "completions":
        slots.extend(_strings(body, "prompt"))
    elif op == "embeddings":
        slots.extend(_strings(body, "input"))
    elif op == "responses":
        slots.extend(_content(body, "input"))
        slots.extend(_strings(body, "instructions"))
    elif op == "images":
        slots.extend(_strings(body, "prompt"))
    return slots


def answer_slots(op: str, obj: dict[str, Any]) -> list[Slot]:
    """The text fields of a (whole) answer: chat/completions choices, Anthropic content, Responses output."""
    slots: list[Slot] = []
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("message"), dict):
            slots.extend(_content(choice["message"], "content"))
        if isinstance(choice.get("text"), str):
            slots.append(Slot(choice, "text"))
    if op == "messages" or obj.get("type") == "message":
        slots.extend(_content(obj, "content"))
    for item in obj.get("output") or ():
        if isinstance(item, dict):
            slots.extend(_content(item, "content"))
    if isinstance(obj.get("output_text"), str):
        slots.append(Slot(obj, "output_text"))
    return slots


def parse_answer(body: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
