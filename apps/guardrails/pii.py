"""The PII and secrets guardrail: mask or block e-mails, phones, cards, IBANs, national ids and credentials.

Per entity type the policy says ``mask`` (the value becomes ``[EMAIL_1]``-style placeholders, in the
text that goes upstream and in the answer the client reads) or ``block`` (the request is refused with a
400 naming the entity type; in an answer, the answer is refused or the stream ends with the error).
"""

from __future__ import annotations

from typing import Any

from apps.guardrails.base import Guardrail
from apps.guardrails.detectors import find
from apps.guardrails.errors import GuardrailError
from apps.guardrails.masking import Masker, StreamMasker
from apps.guardrails.policy import PiiPolicy, ResolvedPolicy
from apps.guardrails.state import GuardedCall
from apps.guardrails.text import answer_slots


def _refuse(name: str, entities: list[str], where: str) -> GuardrailError:
    entities = sorted(set(entities))
    return GuardrailError(
        name, entities[0], f"The {where} contains {', '.join(entities)}, which this key's policy blocks."
    )


class PiiGuardrail(Guardrail):
    name = "pii"

    def applies(self, policy: ResolvedPolicy) -> bool:
        return policy.pii is not None

    @staticmethod
    def _policy(call: GuardedCall) -> PiiPolicy:
        pii = call.policy.pii
        assert pii is not None
        return pii

    async def check_request(self, call: GuardedCall) -> None:
        pii = self._policy(call)
        masker = Masker(pii.entities)
        call.state["pii_numbers"] = masker.numbers  # the answer's placeholders continue the prompt's numbering
        pending = []
        for slot in call.slots:
            text = slot.get()
            found = find(text, pii.entities)
            if not found:
                continue
            blocked = [f.entity for f in found if f.entity in pii.block]
            if blocked:
                call.record(self.name, "request", "blocked", blocked)
                raise _refuse(self.name, blocked, "request")
            pending.append((slot, text, found))
        for slot, text, found in pending:  # nothing is rewritten before every slot passed the block check
            slot.set(masker.mask(text, found))
        call.record(self.name, "request", "masked" if masker.counts else "passed", list(masker.counts))

    def wants_answers(self, call: GuardedCall) -> bool:
        return self._policy(call).answers

    def _answer_masker(self, call: GuardedCall) -> Masker:
        masker = Masker(self._policy(call).entities)
        masker.numbers = call.state.setdefault("pii_numbers", {})
        return masker

    def check_answer(self, call: GuardedCall, obj: dict[str, Any]) -> None:
        pii = self._policy(call)
        masker = self._answer_masker(call)
        for slot in answer_slots(call.op, obj):
            text = slot.get()
            found = find(text, pii.entities)
            blocked = [f.entity for f in found if f.entity in pii.block]
            if blocked:
                call.record(self.name, "answer", "blocked", blocked)
                raise _refuse(self.name, blocked, "answer")
            if found:
                slot.set(masker.mask(text, found))
        call.record(self.name, "answer", "masked" if masker.counts else "passed", list(masker.counts))

    def stream_masker(self, call: GuardedCall) -> StreamMasker:
        return StreamMasker(self._answer_masker(call), block=self._policy(call).block)
