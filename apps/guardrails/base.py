"""The guardrail chain: classes named in ``settings.PROXY_GUARDRAILS``, run around the upstream call.

Like the limiters' chain (``apps.ratelimit.chain``), each guardrail is a class with a ``name``, loaded
once at startup from import strings; a key's policy (``KeyContext.guardrails``, compiled when its
context is built) says which of them act on its requests and how. Before the call each active
guardrail reads the request's text (and may mask it in place or refuse it with a ``GuardrailError``);
after it, those that look at answers rewrite the answer, streams included (``streams.py``).

A key without any policy costs one attribute check (``ctx.key.guardrails is None``) in the proxy.

Moderation needs a model call through the gateway's own router; this app sits below the proxy and never
imports it, so the proxy hands the chain a ``Classifier`` callable when it builds it.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.utils.module_loading import import_string

from apps.guardrails.masking import StreamMasker
from apps.guardrails.policy import ResolvedPolicy
from apps.guardrails.state import Classifier, GuardedCall
from apps.guardrails.streams import ChunkFilter
from apps.guardrails.text import GUARDED_OPS, parse_answer, request_slots
from apps.proxy.context import RequestContext


class Guardrail:
    """Base class. ``applies`` says whether a policy switches it on; override the hooks it needs."""

    name = ""

    def applies(self, policy: ResolvedPolicy) -> bool:
        return False

    async def check_request(self, call: GuardedCall) -> None:
        return None

    def wants_answers(self, call: GuardedCall) -> bool:
        return False

    def check_answer(self, call: GuardedCall, obj: dict[str, Any]) -> None:
        """A whole answer (parsed): rewrite its text in place or raise ``GuardrailError``."""
        return None

    def stream_masker(self, call: GuardedCall) -> StreamMasker:
        """A new masker for one stream of answer text (one choice); called for guardrails that want answers."""
        raise NotImplementedError


class GuardrailChain:
    def __init__(self, guardrails: list[Guardrail], classifier: Classifier | None = None) -> None:
        self.guardrails = guardrails
        self.classifier = classifier

    async def check_request(self, ctx: RequestContext, op: str, body: dict[str, Any]) -> None:
        """Run every guardrail the key's policy switches on over the request; masks ``body`` in place."""
        policy = ctx.key.guardrails
        if policy is None or op not in GUARDED_OPS:
            return
        call = GuardedCall(ctx=ctx, op=op, policy=policy, slots=request_slots(op, body), classify=self.classifier)
        ctx.guardrails = call
        for guardrail in self.guardrails:
            if guardrail.applies(policy):
                await guardrail.check_request(call)

    def answering(self, ctx: RequestContext) -> list[Guardrail]:
        """The guardrails that look at this request's answer (empty for most)."""
        call = ctx.guardrails
        if call is None:
            return []
        return [g for g in self.guardrails if g.applies(call.policy) and g.wants_answers(call)]

    def answer(self, ctx: RequestContext, body: bytes) -> bytes:
        """A whole answer as the client may see it (masked), or ``GuardrailError``; unchanged when no
        guardrail looks at answers or the body is not a JSON object."""
        guardrails = self.answering(ctx)
        if not guardrails:
            return body
        obj = parse_answer(body)
        if obj is None:
            return body
        for guardrail in guardrails:
            guardrail.check_answer(ctx.guardrails, obj)
        return orjson.dumps(obj)

    def stream_filter(self, ctx: RequestContext) -> ChunkFilter | None:
        """What rewrites a streamed answer's chunks, or None when no guardrail looks at answers."""
        guardrails = self.answering(ctx)
        if not guardrails:
            return None
        call = ctx.guardrails
        return ChunkFilter(lambda: [g.stream_masker(call) for g in guardrails], guardrails[0].name, call)


def build_guardrails(paths: list[str] | None = None, classifier: Classifier | None = None) -> GuardrailChain:
    """The chain of ``paths`` (default ``settings.PROXY_GUARDRAILS``, import strings), given the classifier."""
    names = settings.PROXY_GUARDRAILS if paths is None else paths
    return GuardrailChain([import_string(name)() for name in names], classifier=classifier)


def outcomes_of(ctx: RequestContext) -> dict[str, dict[str, Any]] | None:
    """What the ledger records for this request (None: no guardrail ran)."""
    call = ctx.guardrails
    return call.outcomes if isinstance(call, GuardedCall) and call.outcomes else None
