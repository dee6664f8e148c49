"""Prometheus counts of guardrail outcomes. Labels are the guardrail's class name and a fixed outcome
word: never a tenant, a key, a category chosen by a tenant (deny-list topics) or any text."""

from __future__ import annotations

from prometheus_client import Counter

OUTCOMES = Counter(
    "gateway_guardrail_outcomes",
    "Guardrail outcomes on /v1 requests: passed, masked, blocked, error_open (admitted), error_closed (refused).",
    ["guardrail", "stage", "outcome"],
)


def count(guardrail: str, stage: str, outcome: str) -> None:
    OUTCOMES.labels(guardrail, stage, outcome).inc()
