"""Masking a streamed answer chunk by chunk (chat and completions chunks; Anthropic messages re-shaped from them).

Each choice of the answer has its own maskers. A chunk's text delta goes through them and the chunk
carries on with what they release (possibly nothing yet); the chunk that finishes a choice carries what
they still held. Chunks are the providers' parsed objects: this module only reads and rewrites their
``obj`` (and drops ``raw``, the upstream's bytes, so the encoder writes the rewritten object). Native
event streams (``(name, bytes)`` pairs) are left as they are (docs/guardrails.md, "Limits").
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from apps.guardrails.errors import GuardrailError
from apps.guardrails.masking import BlockedInAnswer, StreamMasker
from apps.guardrails.state import GuardedCall


class ChunkFilter:
    def __init__(self, make: Callable[[], list[StreamMasker]], name: str, call: GuardedCall) -> None:
        self._make = make
        self._name = name
        self._call = call
        self._choices: dict[int, list[StreamMasker]] = {}
        self._template: dict[str, Any] | None = None  # the last content chunk, the shape of a flush chunk
        self._finished: set[int] = set()

    def _run(self, index: int, text: str, final: bool) -> str:
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

    def apply(self, item: Any) -> Any:
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
        for index in sorted(set(self._choices) - self._finished):
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
            found = {entity for maskers in self._choices.values() for m in maskers for entity in m.masker.counts}
            self._call.record(self._name, "answer", "masked" if found else "passed", sorted(found))
