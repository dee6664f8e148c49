"""Moderation and prompt-injection guardrails: a classifier deployment, called through the gateway's router.

Two classifier shapes (``kind``):

- ``openai_moderation``: a ``/v1/moderations`` deployment (OpenAI's, or any server answering its shape).
  ``results[].category_scores`` are compared with the policy's ``thresholds`` (category -> score; ``*``
  for every other category); without thresholds the classifier's own ``categories`` flags decide.
- ``llama_guard``: a chat model answering ``safe`` or ``unsafe\\nS1,S10`` (Llama Guard 3 and the like,
  served by vLLM, Ollama, TGI...). A listed category scores 1.0, so thresholds select which categories
  refuse (``{"S1": 1, "S10": 1}``); without thresholds any ``unsafe`` refuses.

The classifier gets the request's text after the PII guardrail masked it. When it fails (error, bad
answer, or no answer within ``timeout_seconds``) the policy's ``on_error`` decides: ``open`` admits the
request (recorded ``error_open``), ``closed`` refuses it with a 503 ``guardrail_unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from apps.common.intervallog import IntervalLog
from apps.guardrails.base import Guardrail
from apps.guardrails.errors import GuardrailError
from apps.guardrails.policy import ClassifierPolicy, ResolvedPolicy
from apps.guardrails.state import GuardedCall

logger = logging.getLogger(__name__)
MAX_CLASSIFIED_CHARS = 100_000  # what one classifier call reads; beyond it, a max_input_chars policy applies


class ClassifierUnusable(Exception):
    """The classifier answered something this guardrail cannot read."""


def openai_moderation_scores(obj: dict[str, Any]) -> tuple[dict[str, float], set[str]]:
    """(highest score per category over the results, categories the classifier flagged)."""
    results = obj.get("results")
    if not isinstance(results, list) or not results:
        raise ClassifierUnusable("no results")
    scores: dict[str, float] = {}
    flagged: set[str] = set()
    for result in results:
        if not isinstance(result, dict):
            raise ClassifierUnusable("a result is not an object")
        for category, score in (result.get("category_scores") or {}).items():
            if isinstance(score, int | float) and not isinstance(score, bool):
                scores[category] = max(scores.get(category, 0.0), float(score))
        for category, on in (result.get("categories") or {}).items():
            if on is True:
                flagged.add(category)
    return scores, flagged


def llama_guard_scores(obj: dict[str, Any]) -> tuple[dict[str, float], set[str]]:
    try:
        content = obj["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ClassifierUnusable("no chat answer") from None
    if not isinstance(content, str):
        raise ClassifierUnusable("no text in the chat answer")
    lines = [line.strip() for line in content.strip().splitlines() if line.strip()]
    verdict = lines[0].lower() if lines else ""
    if verdict == "safe":
        return {}, set()
    if verdict != "unsafe":
        raise ClassifierUnusable("the answer is neither safe nor unsafe")
    categories = {c.strip() for c in lines[1].split(",") if c.strip()} if len(lines) > 1 else {"unsafe"}
    return dict.fromkeys(categories, 1.0), categories


def refused_categories(policy: ClassifierPolicy, scores: dict[str, float], flagged: set[str]) -> list[str]:
    if not policy.thresholds:
        return sorted(flagged)
    default = policy.thresholds.get("*")
    refused = []
    for category, score in scores.items():
        threshold = policy.thresholds.get(category, default)
        if threshold is not None and score >= threshold:
            refused.append(category)
    return sorted(refused)


class ModerationGuardrail(Guardrail):
    name = "moderation"
    section = "moderation"
    refusal = "The request was refused by content moderation"

    def __init__(self) -> None:
        self.failures = IntervalLog(logger, interval=10.0)

    def _policy(self, policy: ResolvedPolicy) -> ClassifierPolicy | None:
        return getattr(policy, self.section)

    def applies(self, policy: ResolvedPolicy) -> bool:
        return self._policy(policy) is not None

    def _request(self, policy: ClassifierPolicy, text: str) -> tuple[str, dict[str, Any]]:
        if policy.kind == "llama_guard":
            return "chat", {
                "model": policy.model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": 32,
                "temperature": 0,
            }
        return "moderations", {"model": policy.model, "input": text}

    async def check_request(self, call: GuardedCall) -> None:
        policy = self._policy(call.policy)
        assert policy is not None
        text = "\n\n".join(t for t in call.texts() if t)[:MAX_CLASSIFIED_CHARS]
        if not text.strip():
            call.record(self.name, "request", "passed")
            return
        op, body = self._request(policy, text)
        try:
            if call.classify is None:
                raise ClassifierUnusable("no classifier is wired into this gateway")
            obj = await asyncio.wait_for(call.classify(call.ctx, policy.model, op, body), policy.timeout_seconds)
            read = llama_guard_scores if policy.kind == "llama_guard" else openai_moderation_scores
            scores, flagged = read(obj)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # any failure of the classifier: the policy's on_error decides, logged and counted
            reason = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            self.failures.event(
                f"{self.name}:{reason}", f"{self.name} classifier failed ({reason})", level=logging.WARNING
            )
            if policy.fail_closed:
                call.record(self.name, "request", "error_closed", [reason])
                raise GuardrailError(
                    self.name, "classifier_unavailable", f"{self.refusal}: the classifier is unavailable.", status=503
                ) from None
            call.record(self.name, "request", "error_open", [reason])
            return
        refused = refused_categories(policy, scores, flagged)
        if refused:
            call.record(self.name, "request", "blocked", refused)
            raise GuardrailError(self.name, refused[0], f"{self.refusal} ({', '.join(refused)}).")
        call.record(self.name, "request", "passed")


class PromptInjectionGuardrail(ModerationGuardrail):
    """The same mechanism with its own classifier (a prompt-injection/jailbreak model), policy and name."""

    name = "prompt_injection"
    section = "prompt_injection"
    refusal = "The request looks like a prompt injection"
