"""PII detectors: a regular expression finds candidates, a checksum or a shape rule confirms them.

Pure Python regexes, no model download (docs/guardrails.md says why Presidio is not used). Every
pattern's match length is bounded (``MAX_CANDIDATE_START``): a stream scanner that holds back that many
trailing characters never releases the beginning of something that later turns out to be an entity.

Entity types (the names policies use):

- ``email``: RFC 5322-ish addresses (local part up to 64 characters).
- ``phone``: international ``+CC ...`` numbers and North American ``(555) 123-4567`` / ``555-123-4567``;
  8 to 15 digits. Bare digit runs are not phones (order numbers, ids).
- ``payment_card``: 13-19 digits, optionally grouped by spaces or dashes, with a known issuer prefix
  (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay) and a valid Luhn checksum.
- ``iban``: country code, check digits, the national length for the country, valid mod-97.
- ``us_ssn``: dashed ``AAA-GG-SSSS`` with the never-issued areas (000, 666, 9xx), groups and serials excluded.
- ``uk_nino``: UK National Insurance numbers (two letters from the allowed set, six digits, A-D suffix).
- ``secret``: API keys and tokens (``apps.guardrails.secret_patterns``: detect-secrets' patterns plus
  the LLM providers' own key shapes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from apps.guardrails.secret_patterns import SECRET_PATTERNS


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) checksum every payment card number carries."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Issuer identification numbers: a 16-digit order number with a valid Luhn digit (1 in 10 do) is still
# not a card unless it starts like one and has that issuer's length.
_CARD_ISSUERS = re.compile(
    r"^(?:4\d{12}(?:\d{3}){0,2}"  # Visa: 13, 16, 19
    r"|5[1-5]\d{14}|2(?:2[2-9][1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)\d{12}"  # Mastercard
    r"|3[47]\d{13}"  # American Express
    r"|6(?:011|5\d\d|4[4-9]\d)\d{12,15}"  # Discover
    r"|35(?:2[89]|[3-8]\d)\d{12,15}"  # JCB
    r"|3(?:0[0-5]|[68]\d)\d{11,16}"  # Diners Club
    r"|62\d{14,17})$"  # UnionPay
)


def card_valid(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and bool(_CARD_ISSUERS.match(digits)) and luhn_valid(digits)


# IBAN lengths per country (ISO 13616 registry, the SEPA area and common others).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
    "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21,
    "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30,
    "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_valid(text: str) -> bool:
    """Country length and the ISO 7064 mod-97 check (the rearranged number, letters as 10..35, is 1 mod 97)."""
    iban = text.replace(" ", "").upper()
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def phone_valid(text: str) -> bool:
    return 8 <= sum(ch.isdigit() for ch in text) <= 15


@dataclass(frozen=True, slots=True)
class EntityType:
    name: str
    label: str  # placeholder stem: [EMAIL_1]
    pattern: Any  # re.Pattern, or anything with the same finditer(text, pos)
    valid: Callable[[str], bool] | None = None


class Trigger:
    """A cheap pattern whose match spans several ``Windowed`` detectors share: found once per text.

    Remembers the spans of the last text it scanned (one entry; the event loop runs one scan at a time), so
    cards, phones and SSNs cost one scan for digit runs between them, not three.
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)
        self._last: tuple[str, int, list[tuple[int, int]]] | None = None

    def spans(self, text: str, pos: int) -> list[tuple[int, int]]:
        last = self._last
        if last is not None and last[0] is text and last[1] == pos:
            return last[2]
        spans = [m.span() for m in self.pattern.finditer(text, pos)]
        self._last = (text, pos, spans)
        return spans


class Windowed:
    """A pattern run only around the places a cheap trigger finds ("@" for e-mails, digit runs for cards,
    phones and SSNs), with ``finditer(text, pos)`` like a compiled pattern.

    Python's regex engine cannot skip ahead to a pattern that starts with a look-behind: it tries every
    position. The triggers start with a plain character (class), which it scans for fast, and the windows
    around them are wide enough for any match (``before``/``after``), so the matches are the same.
    """

    def __init__(self, pattern: str, trigger: Trigger, before: int, after: int) -> None:
        self.pattern = re.compile(pattern)
        self.trigger = trigger
        self.before, self.after = before, after

    def finditer(self, text: str, pos: int = 0) -> Iterator[re.Match[str]]:
        lo = hi = -1
        for t_start, t_end in self.trigger.spans(text, pos):
            start, end = max(pos, t_start - self.before), min(len(text), t_end + self.after)
            if start <= hi:
                hi = max(hi, end)
                continue
            if hi >= 0:
                yield from self.pattern.finditer(text, lo, hi)
            lo, hi = start, end
        if hi >= 0:
            yield from self.pattern.finditer(text, lo, hi)


# Look-behinds come after the first character where they can: a pattern that starts with a character class
# is scanned for quickly, one that starts with a look-behind is tried at every position.
_EMAIL = Windowed(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?){0,6}\.[A-Za-z]{2,24}(?![\w-])",
    Trigger(r"@"),
    before=70,
    after=480,
)
_DIGIT_RUN = Trigger(r"\d[\d ().-]{6,}\d")  # 8+ characters of digits and separators: where cards, phones and SSNs are
_PHONE = Windowed(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?![\w-])",
    _DIGIT_RUN,
    before=2,
    after=2,
)
_CARD = Windowed(
    r"(?<![\w-])(?:\d{4}[ -]?){2,3}\d{4}(?:[ -]?\d{1,3})?(?![\w-])|(?<![\w-])3\d{3}[ -]?\d{6}[ -]?\d{5}(?![\w-])",
    _DIGIT_RUN,
    before=1,
    after=2,
)
_IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_SSN = Windowed(r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])", _DIGIT_RUN, before=1, after=2)
_NINO = re.compile(
    r"[A-CEGHJ-PR-TW-Z](?<![A-Za-z0-9][A-Z])[A-CEGHJ-NPR-TW-Z](?<!BG|GB|KN|NK|NT|TN|ZZ)"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])"
)

ENTITY_TYPES: dict[str, EntityType] = {
    e.name: e
    for e in (
        EntityType("email", "EMAIL", _EMAIL),
        EntityType("phone", "PHONE", _PHONE, phone_valid),
        EntityType("payment_card", "CARD", _CARD, card_valid),
        EntityType("iban", "IBAN", _IBAN, iban_valid),
        EntityType("us_ssn", "SSN", _SSN),
        EntityType("uk_nino", "NINO", _NINO),
        EntityType("secret", "SECRET", SECRET_PATTERNS),
    )
}
ENTITY_NAMES = tuple(ENTITY_TYPES)

# The longest stretch from where a candidate starts to where it first matches (an e-mail's 64-character
# local part plus "@a.bc"; an Azure storage key's 99 characters; a PyPI token's 90).
# A stream scanner holds back this many trailing characters, and no more, unless a candidate is still growing.
MAX_CANDIDATE_START = 128


@dataclass(frozen=True, slots=True)
class Found:
    entity: str
    start: int
    end: int
    text: str


def find(text: str, entities: tuple[str, ...], pos: int = 0) -> list[Found]:
    """Confirmed entities in ``text`` from ``pos`` on, earliest first, overlaps resolved to the first/longest."""
    found: list[Found] = []
    for name in entities:
        etype = ENTITY_TYPES[name]
        for m in etype.pattern.finditer(text, pos):
            value = m.group(0)
            if etype.valid is None or etype.valid(value):
                found.append(Found(name, m.start(), m.end(), value))
    if len(found) < 2:
        return found
    found.sort(key=lambda f: (f.start, -(f.end - f.start)))
    kept: list[Found] = []
    for f in found:
        if not kept or f.start >= kept[-1].end:
            kept.append(f)
    return kept


def candidate_starts(text: str, entities: tuple[str, ...], pos: int) -> Iterator[tuple[int, int]]:
    """(start, end) of every raw pattern match from ``pos`` on, confirmed or not (for the stream scanner)."""
    for name in entities:
        for m in ENTITY_TYPES[name].pattern.finditer(text, pos):
            yield m.start(), m.end()
