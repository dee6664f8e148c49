"""The cheap guardrails: a maximum input size and deny lists (keywords and topics)."""

from __future__ import annotations

from apps.guardrails.base import Guardrail
from apps.guardrails.errors import GuardrailError
from apps.guardrails.policy import ResolvedPolicy
from apps.guardrails.state import GuardedCall


class MaxInputSize(Guardrail):
    """Refuses a request whose text (every message, prompt or input, summed) is longer than the policy allows.

    Characters, not tokens: counting them costs nothing and means the same for every model.
    """

    name = "max_input_size"

    def applies(self, policy: ResolvedPolicy) -> bool:
        return policy.max_input_chars is not None

    async def check_request(self, call: GuardedCall) -> None:
        limit = call.policy.max_input_chars
        assert limit is not None
        size = sum(len(text) for text in call.texts())
        if size > limit:
            call.record(self.name, "request", "blocked", ["max_input_chars"])
            raise GuardrailError(
                self.name, "max_input_chars", f"The input is {size} characters; this key allows at most {limit}."
            )
        call.record(self.name, "request", "passed")


class DenyList(Guardrail):
    """Refuses a request naming a denied keyword or a word of a denied topic: whole words, any case,
    any whitespace inside a phrase. The category is "keyword" or the topic's name; the word itself is
    not echoed (it may be what the policy wants kept quiet)."""

    name = "deny"

    def applies(self, policy: ResolvedPolicy) -> bool:
        return policy.deny is not None

    async def check_request(self, call: GuardedCall) -> None:
        deny = call.policy.deny
        assert deny is not None
        for text in call.texts():
            lowered = text.lower()
            if not any(word in lowered for word in deny.first_words):
                continue
            m = deny.pattern.search(text)
            if m is not None:
                category = deny.categories.get(" ".join(m.group(0).lower().split()), "keyword")
                call.record(self.name, "request", "blocked", [category])
                raise GuardrailError(self.name, category, f"The request touches a denied {_what(category)}.")
        call.record(self.name, "request", "passed")


def _what(category: str) -> str:
    return "keyword" if category == "keyword" else f"topic ({category})"
