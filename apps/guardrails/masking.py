"""Masking text, whole or as a stream.

Masked values become numbered placeholders, ``[EMAIL_1]``, ``[CARD_2]``: one number per distinct value
within a request (the prompt and its answer share the numbering), so the model can still tell two
people's addresses apart and refer back to them, and nothing of the value goes upstream.

``StreamMasker`` masks an answer that arrives in pieces. It holds back the trailing
``MAX_CANDIDATE_START`` characters (the longest stretch from where an entity starts to where its
pattern first matches), plus any candidate that is still growing at the end of what arrived, and
releases the rest in steps of ``_RELEASE_STEP`` characters. So a card number split over three chunks is
masked, and text far from any candidate is delayed by at most ~150 characters (a few dozen tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from apps.guardrails.detectors import ENTITY_TYPES, MAX_CANDIDATE_START, Found, candidate_starts, find

# Characters of already released text kept in front of the buffer: look-behinds (no digit or letter just
# before a card or an e-mail) see the real preceding character.
_CONTEXT = 8
# New text is scanned once this much of it is past the held-back window, not on every token: a stream's
# text arrives a few characters at a time, and each scan runs every enabled pattern over the buffer.
_RELEASE_STEP = 24
# A candidate that keeps growing is held at most this long (a megabyte "token"): then it is released,
# masked as far as its pattern confirms.
_MAX_HELD = 16_384


@dataclass(slots=True)
class Masker:
    """Replaces confirmed entities by placeholders, remembering what it found (types only, never values)."""

    entities: tuple[str, ...]
    numbers: dict[tuple[str, str], int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # entity type -> occurrences masked

    def placeholder(self, found: Found) -> str:
        key = (found.entity, found.text)
        number = self.numbers.get(key)
        if number is None:
            number = sum(1 for entity, _ in self.numbers if entity == found.entity) + 1
            self.numbers[key] = number
        self.counts[found.entity] = self.counts.get(found.entity, 0) + 1
        return f"[{ENTITY_TYPES[found.entity].label}_{number}]"

    def mask(self, text: str, found: list[Found] | None = None, pos: int = 0) -> str:
        found = find(text, self.entities, pos) if found is None else found
        if not found:
            return text[pos:]
        out, at = [], pos
        for f in found:
            out.append(text[at : f.start])
            out.append(self.placeholder(f))
            at = f.end
        out.append(text[at:])
        return "".join(out)


@dataclass(slots=True)
class StreamMasker:
    """One stream of text (one choice of an answer): ``feed`` each delta, ``flush`` at the end."""

    masker: Masker
    block: tuple[str, ...] = ()  # entity types that end the answer instead of being masked
    buffer: str = ""
    context: int = 0  # leading characters of ``buffer`` already released (look-behind context)

    def feed(self, text: str) -> str:
        if not text:
            return ""
        self.buffer += text
        cut = len(self.buffer) - MAX_CANDIDATE_START
        if cut - self.context < _RELEASE_STEP:
            return ""
        entities = self.masker.entities
        spans = list(candidate_starts(self.buffer, entities, self.context))
        moved = True
        while moved:  # a candidate across the cut (or still growing at the end) is held whole
            moved = False
            for start, end in spans:
                if start < cut < end:
                    cut, moved = start, True
        if len(self.buffer) - cut > _MAX_HELD:
            cut = len(self.buffer) - MAX_CANDIDATE_START
        if cut <= self.context:
            return ""
        return self._release(cut)

    def flush(self) -> str:
        return self._release(len(self.buffer))

    def _release(self, cut: int) -> str:
        head = self.buffer[:cut]
        found = find(head, self.masker.entities, self.context)
        blocked = [f.entity for f in found if f.entity in self.block]
        if blocked:
            raise BlockedInAnswer(blocked)
        released = self.masker.mask(head, found, self.context)
        keep_from = max(0, cut - _CONTEXT)
        self.buffer = self.buffer[keep_from:]
        self.context = cut - keep_from
        return released


class BlockedInAnswer(Exception):
    """An entity the policy blocks appeared in the model's answer."""

    def __init__(self, entities: list[str]) -> None:
        super().__init__(", ".join(entities))
        self.entities = sorted(set(entities))
