"""One request's guardrail state, shared by the chain (``base.py``) and the stream filter (``streams.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from apps.guardrails import metrics
from apps.guardrails.policy import ResolvedPolicy
from apps.guardrails.text import Slot
from apps.proxy.context import RequestContext

# (ctx, model, op, body) -> the classifier's JSON answer. Raises on any failure (the guardrail decides
# open or closed); the proxy's implementation is apps.proxy.classifier.
Classifier = Callable[[RequestContext, str, str, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(slots=True)
class GuardedCall:
    """One request's guardrail state (``RequestContext.guardrails``): its text slots and the outcomes so far."""

    ctx: RequestContext
    op: str
    policy: ResolvedPolicy
    slots: list[Slot]
    classify: Classifier | None = None
    # guardrail name -> {"request": outcome, "answer": outcome, "categories": [...]}: what the ledger keeps.
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)  # a guardrail's own per-request data (the PII masker)

    def texts(self) -> list[str]:
        return [slot.get() for slot in self.slots]

    def record(self, guardrail: str, stage: str, outcome: str, categories: list[str] | tuple[str, ...] = ()) -> None:
        entry = self.outcomes.setdefault(guardrail, {})
        entry[stage] = outcome
        if categories:
            entry["categories"] = sorted(set(entry.get("categories", ())) | set(categories))
        metrics.count(guardrail, stage, outcome)
