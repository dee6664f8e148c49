"""Masking a streamed answer chunk by chunk: chat and completions chunks (and Anthropic messages re-shaped from
them), OpenAI Responses events, and Anthropic's own events on a native ``/v1/messages`` stream.

Each choice of the answer has its own maskers. A chunk's text delta goes through them and the chunk
carries on with what they release (possibly nothing yet); the chunk that finishes a choice carries what
they still held. Chunks are the providers' parsed objects: this module only reads and rewrites their
``obj`` (and drops ``raw``, the upstream's bytes, so the encoder writes the rewritten object); native events
are ``(name, bytes)`` pairs, rewritten as such. Events that carry a whole text (Responses ``*.done`` and
``response.completed``) are masked whole, with the same placeholders.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson

from apps.guardrails.detectors import find
from apps.guardrails.errors import GuardrailError
from apps.guardrails.masking import BlockedInAnswer, StreamMasker
from apps.guardrails.state import GuardedCall


class ChunkFilter:
    def __init__(self, make: Callable[[], list[StreamMasker]], name: str, call: GuardedCall) -> None:
        self._make = make
        self._name = name
        self._call = call
        # One stream of text each: a chat choice's index, ("anthropic", block index), ("responses", output, part).
        self._choices: dict[Any, list[StreamMasker]] = {}
        self._whole: list[StreamMasker] | None = None  # masks whole texts (the done events' full text)
        self._template: dict[str, Any] | None = None  # the last content chunk, the shape of a flush chunk
        self._finished: set[int] = set()

    def _run(self, index: Any, text: str, final: bool) -> str:
        maskers = self._choices.get(index)
        if maskers is None:
            maskers = self._choices[index] = self._make()
        try:
            for masker in maskers:
                text = masker.feed(text) + (masker.flush() if final else "") if text or final else ""
        except BlockedInAnswer as exc:
            self._call.record(self._name, "answer", "blocked", exc.entities)
            raise GuardrailError(
                self._name,
                exc.entities[0],
                f"The answer contained {', '.join(exc.entities)}, which this key's policy blocks.",
            ) from None
        return text

    def apply(self, item: Any) -> list[Any]:
        """The items to relay for ``item``: itself rewritten, nothing (all of its text is held back), or an
        extra text event first (what was held, before the event that closes a content block)."""
        if isinstance(item, tuple):
            return self._anthropic(item)
        obj = getattr(item, "obj", None)
        if isinstance(obj, dict) and isinstance(obj.get("type"), str) and obj["type"].startswith("response."):
            return self._responses(item, obj)
        return [self._chat(item)]

    def _mask_whole(self, text: str) -> str:
        if self._whole is None:
            self._whole = self._make()
        for masker in self._whole:
            found = find(text, masker.masker.entities)
            blocked = sorted({f.entity for f in found if f.entity in masker.block})
            if blocked:
                self._call.record(self._name, "answer", "blocked", blocked)
                raise GuardrailError(self._name, blocked[0], _blocked_message(blocked))
            text = masker.masker.mask(text, found)
        return text

    def _mask_texts(self, value: Any) -> None:
        """Every ``text`` string inside a Responses event's object (content parts, output items, the response)."""
        if isinstance(value, dict):
            for key, inner in value.items():
                if key in ("text", "output_text") and isinstance(inner, str):
                    value[key] = self._mask_whole(inner)
                else:
                    self._mask_texts(inner)
        elif isinstance(value, list):
            for inner in value:
                self._mask_texts(inner)

    def _responses(self, item: Any, obj: dict[str, Any]) -> list[Any]:
        """OpenAI Responses events: deltas through the stream maskers, full texts in the others masked whole."""
        kind = obj["type"]
        key = ("responses", obj.get("output_index"), obj.get("content_index"))
        item.raw = None
        if kind == "response.output_text.delta" and isinstance(obj.get("delta"), str):
            obj["delta"] = self._run(key, obj["delta"], False)
            return [item] if obj["delta"] else []
        out = []
        if kind == "response.output_text.done" and key in self._choices:
            self._finished.add(key)
            held = self._run(key, "", True)
            if held:
                extra = copy.copy(item)
                extra.obj = {k: v for k, v in obj.items() if k != "text"} | {
                    "type": "response.output_text.delta",
                    "delta": held,
                }
                extra.raw = None
                out.append(extra)
        if kind != "response.output_text.delta":
            self._mask_texts(obj)
        out.append(item)
        return out

    def _anthropic(self, item: tuple[str | None, bytes]) -> list[Any]:
        """Anthropic's own events (a native /v1/messages stream): text deltas masked, held text flushed before
        the block's ``content_block_stop``."""
        name, data = item
        if name not in ("content_block_delta", "content_block_stop"):
            return [item]
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return [item]
        if not isinstance(obj, dict):
            return [item]
        key = ("anthropic", obj.get("index"))
        delta = obj.get("delta")
        if name == "content_block_delta" and isinstance(delta, dict) and isinstance(delta.get("text"), str):
            delta["text"] = self._run(key, delta["text"], False)
            return [(name, orjson.dumps(obj))] if delta["text"] else []
        if name == "content_block_stop" and key in self._choices:
            self._finished.add(key)
            held = self._run(key, "", True)
            if held:
                extra = {
                    "type": "content_block_delta",
                    "index": obj.get("index"),
                    "delta": {"type": "text_delta", "text": held},
                }
                return [("content_block_delta", orjson.dumps(extra)), item]
        return [item]

    def _chat(self, item: Any) -> Any:
        obj = getattr(item, "obj", None)
        if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
            return item
        changed = False
        for choice in obj["choices"]:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0) if isinstance(choice.get("index"), int) else 0
            final = choice.get("finish_reason") is not None
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str) or (final and index in self._choices):
                    delta["content"] = self._run(index, content if isinstance(content, str) else "", final)
                    changed = True
                    self._template = {"obj": obj, "index": index, "kind": "delta"}
            elif isinstance(choice.get("text"), str):
                choice["text"] = self._run(index, choice["text"], final)
                changed = True
                self._template = {"obj": obj, "index": index, "kind": "text"}
            if final:
                self._finished.add(index)
        if changed:
            item.raw = None
        return item

    def flush(self) -> list[dict[str, Any]]:
        """Chunks carrying what is still held for choices that never finished (a stream cut short)."""
        out = []
        for index in sorted(i for i in set(self._choices) - self._finished if isinstance(i, int)):
            text = self._run(index, "", True)
            if not text or self._template is None:
                continue
            obj = copy.deepcopy(self._template["obj"])
            choice = {"index": index, "finish_reason": None}
            choice.update({"delta": {"content": text}} if self._template["kind"] == "delta" else {"text": text})
            obj["choices"] = [choice]
            obj.pop("usage", None)
            out.append(obj)
        return out

    def outcome(self) -> None:
        """Record the answer's outcome once the stream ended (masked when anything was replaced)."""
        if "answer" not in self._call.outcomes.get(self._name, {}):
            every = [*self._choices.values(), *([self._whole] if self._whole else [])]
            found = {entity for maskers in every for m in maskers for entity in m.masker.counts}
            self._call.record(self._name, "answer", "masked" if found else "passed", sorted(found))


def _blocked_message(entities: list[str]) -> str:
    return f"The answer contained {', '.join(entities)}, which this key's policy blocks."
