"""Guardrail policies: the JSON each scope (organization, team, key) stores, its validation, and the merge.

A policy is a JSON object of sections; each section configures one guardrail::

    {
      "pii": {"entities": {"email": "mask", "payment_card": "block", "secret": "block"}, "answers": true},
      "deny": {"keywords": ["project falcon"], "topics": {"weapons": ["rifle", "explosive"]}},
      "max_input_chars": 20000,
      "moderation": {"model": "omni-moderation-latest", "kind": "openai_moderation",
                     "thresholds": {"violence": 0.5, "*": 0.8}, "on_error": "closed", "timeout_seconds": 3},
      "prompt_injection": {"model": "prompt-guard", "kind": "llama_guard", "on_error": "open"}
    }

Merging: the key's policy over its team's over its organization's, section by section (a section the more
specific scope names replaces the inherited one whole; ``null`` switches it off there). The merged
result is compiled once per key context (``ResolvedPolicy``) so a request does no parsing at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from apps.guardrails.detectors import ENTITY_NAMES

SECTIONS = ("pii", "deny", "max_input_chars", "moderation", "prompt_injection")
PII_ACTIONS = ("mask", "block", "off")
CLASSIFIER_KINDS = ("openai_moderation", "llama_guard")
MAX_KEYWORDS = 1000
MAX_KEYWORD_LENGTH = 200
MAX_CLASSIFIER_TIMEOUT = 30.0


class PolicyError(ValueError):
    """A policy that cannot be applied; ``errors`` name each problem with its path ("pii.entities.fax: ...")."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _check_pii(value: Any, errors: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append("pii: must be an object")
        return
    for name in set(value) - {"entities", "answers"}:
        errors.append(f"pii.{name}: unknown setting (entities, answers)")
    entities = value.get("entities", {})
    if not isinstance(entities, dict) or not entities:
        errors.append(f"pii.entities: an object of entity type -> action, types: {', '.join(ENTITY_NAMES)}")
    else:
        for name, action in entities.items():
            if name not in ENTITY_NAMES:
                errors.append(f"pii.entities.{name}: unknown entity type ({', '.join(ENTITY_NAMES)})")
            elif action not in PII_ACTIONS:
                errors.append(f"pii.entities.{name}: action must be one of {', '.join(PII_ACTIONS)}")
    if not isinstance(value.get("answers", True), bool):
        errors.append("pii.answers: must be true or false")


def _check_words(path: str, words: Any, errors: list[str]) -> None:
    if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
        errors.append(f"{path}: a list of non-empty strings")
    elif len(words) > MAX_KEYWORDS or any(len(w) > MAX_KEYWORD_LENGTH for w in words):
        errors.append(f"{path}: at most {MAX_KEYWORDS} entries of at most {MAX_KEYWORD_LENGTH} characters")


def _check_deny(value: Any, errors: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append("deny: must be an object")
        return
    for name in set(value) - {"keywords", "topics"}:
        errors.append(f"deny.{name}: unknown setting (keywords, topics)")
    if "keywords" in value:
        _check_words("deny.keywords", value["keywords"], errors)
    topics = value.get("topics", {})
    if not isinstance(topics, dict):
        errors.append("deny.topics: an object of topic name -> list of words")
    else:
        for topic, words in topics.items():
            if not re.fullmatch(r"[a-z0-9_]{1,40}", topic):
                errors.append(
                    f"deny.topics.{topic}: topic names are 1-40 of a-z, 0-9, _ (they become error categories)"
                )
            _check_words(f"deny.topics.{topic}", words, errors)
    if not value.get("keywords") and not value.get("topics"):
        errors.append("deny: name keywords or topics")


def _check_classifier(section: str, value: Any, errors: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append(f"{section}: must be an object")
        return
    allowed = {"model", "kind", "thresholds", "on_error", "timeout_seconds"}
    for name in set(value) - allowed:
        errors.append(f"{section}.{name}: unknown setting ({', '.join(sorted(allowed))})")
    model = value.get("model")
    if not isinstance(model, str) or not model or len(model) > 200:
        errors.append(f"{section}.model: the public model name of the classifier deployment")
    if value.get("kind", "openai_moderation") not in CLASSIFIER_KINDS:
        errors.append(f"{section}.kind: one of {', '.join(CLASSIFIER_KINDS)}")
    if value.get("on_error", "open") not in ("open", "closed"):
        errors.append(f"{section}.on_error: open (admit when the classifier fails) or closed (refuse)")
    timeout = value.get("timeout_seconds", 5)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_CLASSIFIER_TIMEOUT:
        errors.append(f"{section}.timeout_seconds: a number of seconds in (0, {MAX_CLASSIFIER_TIMEOUT:g}]")
    thresholds = value.get("thresholds", {})
    if not isinstance(thresholds, dict):
        errors.append(f"{section}.thresholds: an object of category -> score in [0, 1]")
        return
    for category, score in thresholds.items():
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            errors.append(f"{section}.thresholds.{category}: a score between 0 and 1")


def policy_errors(config: Any) -> list[str]:
    """Every problem of a stored policy (empty: valid). ``{}`` is valid: the scope adds nothing."""
    if not isinstance(config, dict):
        return ["the policy must be a JSON object"]
    errors: list[str] = []
    for name in set(config) - set(SECTIONS):
        errors.append(f"{name}: unknown section ({', '.join(SECTIONS)})")
    for name in SECTIONS:
        value = config.get(name)
        if value is None:
            continue  # absent: inherited; null: switched off at this scope
        if name == "pii":
            _check_pii(value, errors)
        elif name == "deny":
            _check_deny(value, errors)
        elif name == "max_input_chars":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                errors.append("max_input_chars: a positive number of characters")
        else:
            _check_classifier(name, value, errors)
    return sorted(errors)


def policy_validate(config: Any) -> dict[str, Any]:
    errors = policy_errors(config)
    if errors:
        raise PolicyError(errors)
    return config


@dataclass(frozen=True, slots=True)
class PiiPolicy:
    mask: tuple[str, ...]  # entity types replaced by placeholders
    block: tuple[str, ...]  # entity types that refuse the request
    answers: bool  # also scan (and mask) the model's answers, streams included

    @property
    def entities(self) -> tuple[str, ...]:
        return self.block + self.mask


@dataclass(frozen=True, slots=True)
class DenyPolicy:
    pattern: re.Pattern[str]
    categories: dict[str, str]  # lower-cased word -> category ("keyword" or the topic's name)
    # Each entry's first word, lower-cased: the pattern runs only on text that contains one of them (a
    # substring test per word is ~100x faster than the case-insensitive alternation over 50 KB of prose).
    first_words: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClassifierPolicy:
    model: str
    kind: str
    thresholds: dict[str, float]
    fail_closed: bool
    timeout_seconds: float


@dataclass(frozen=True, slots=True)
class ResolvedPolicy:
    """What a key's requests run through; built with its ``KeyContext`` and cached with it."""

    pii: PiiPolicy | None = None
    deny: DenyPolicy | None = None
    max_input_chars: int | None = None
    moderation: ClassifierPolicy | None = None
    prompt_injection: ClassifierPolicy | None = None
    # Which scope each section came from (for the admin's "effective policy" and the docs' examples).
    sources: tuple[tuple[str, str], ...] = ()


def merge(layers: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Sections of ``layers`` (least specific first) merged: the most specific scope naming a section wins."""
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for scope, config in layers:
        for name in SECTIONS:
            if name in config:
                merged[name] = config[name]
                sources[name] = scope
    active = {k: v for k, v in merged.items() if v is not None}
    return active, {k: s for k, s in sources.items() if k in active}


def _deny_policy(value: dict[str, Any]) -> DenyPolicy:
    categories: dict[str, str] = {}
    for word in value.get("keywords") or ():
        categories.setdefault(" ".join(word.lower().split()), "keyword")
    for topic, words in (value.get("topics") or {}).items():
        for word in words:
            categories.setdefault(" ".join(word.lower().split()), topic)
    # Longest first, so "project falcon" wins over "project"; whitespace inside a phrase matches any run of it.
    words = sorted(categories, key=len, reverse=True)
    alternation = "|".join(r"\s+".join(re.escape(part) for part in word.split()) for word in words)
    first_words = tuple(sorted({word.split()[0] for word in words}))
    return DenyPolicy(re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE), categories, first_words)


def _classifier(value: dict[str, Any]) -> ClassifierPolicy:
    return ClassifierPolicy(
        model=value["model"],
        kind=value.get("kind", "openai_moderation"),
        thresholds={str(k): float(v) for k, v in (value.get("thresholds") or {}).items()},
        fail_closed=value.get("on_error", "open") == "closed",
        timeout_seconds=float(value.get("timeout_seconds", 5)),
    )


def resolve(layers: list[tuple[str, dict[str, Any]]]) -> ResolvedPolicy | None:
    """The compiled policy of ``layers`` (organization, team, key), or None when no guardrail applies.

    A stored policy that no longer validates (edited past the services) is skipped, never half-applied.
    """
    valid = [(scope, config) for scope, config in layers if isinstance(config, dict) and not policy_errors(config)]
    merged, sources = merge(valid)
    if not merged:
        return None
    pii = None
    if "pii" in merged:
        entities = merged["pii"].get("entities", {})
        pii = PiiPolicy(
            mask=tuple(sorted(n for n, a in entities.items() if a == "mask")),
            block=tuple(sorted(n for n, a in entities.items() if a == "block")),
            answers=bool(merged["pii"].get("answers", True)),
        )
        if not pii.entities:
            pii = None
    return ResolvedPolicy(
        pii=pii,
        deny=_deny_policy(merged["deny"]) if "deny" in merged else None,
        max_input_chars=merged.get("max_input_chars"),
        moderation=_classifier(merged["moderation"]) if "moderation" in merged else None,
        prompt_injection=_classifier(merged["prompt_injection"]) if "prompt_injection" in merged else None,
        sources=tuple(sorted(sources.items())),
    )
