"""The responses of one realtime session: each one a request under the limiter chain and a ledger row.

A realtime session is one WebSocket, but its cost comes in responses. Every response counts as a
request: the client's ``response.create`` is reserved against the key's RPM, TPM and budgets before it
goes upstream (a refusal is an ``error`` event carrying the 429's details, and the event is not
forwarded); a response the upstream starts on its own (server VAD) is reserved when its
``response.created`` arrives (a refusal cancels it upstream). ``response.done`` settles the reservation
with the usage it reports, at the deployment's text and audio token prices, and emits one spend event
per response (``<session request id>_r<n>``). None of these take a parallel slot: the session holds one
for its whole life (``RequestContext.slot_held``).

The upstream's events are parsed only when a cheap substring test says they may matter: audio deltas,
the bulk of the traffic, are relayed without being decoded.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from apps.proxy.calls import ProxyGateway, spend_event
from apps.proxy.context import CallResult, RequestContext
from apps.proxy.errors import GatewayError, scrub_upstream_text
from apps.proxy.pricing import Price, realtime_cost
from apps.proxy.providers.base import private_strings
from apps.proxy.registry import Deployment
from apps.ratelimit.errors import ProxyRateLimitError

TEXT_DELTAS = frozenset(
    {
        "response.text.delta",
        "response.output_text.delta",
        "response.audio_transcript.delta",
        "response.output_audio_transcript.delta",
    }
)
DONE_STATUS = {"completed": 200, "incomplete": 200, "cancelled": 200, "failed": 502}


@dataclass(slots=True)
class Response:
    """One response's reservation (``reserved``: ``chain.pre_call`` passed) and what it has sent so far."""

    ctx: RequestContext
    reserved: bool
    client_event_id: str | None = None
    sent_chars: int = 0


def _loads(text: str) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _object(parent: dict[str, Any] | None, name: str) -> dict[str, Any]:
    value = parent.get(name) if parent else None
    return value if isinstance(value, dict) else {}


def _int(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


class ResponseLedger:
    """Reservations and bills for the responses of one session (one per WebSocket, never shared)."""

    def __init__(
        self,
        gw: ProxyGateway,
        session: RequestContext,
        dep: Deployment,
        price: Price,
        send_client: Callable[[str], Awaitable[None]],
        send_upstream: Callable[[str], Awaitable[None]],
    ) -> None:
        self.gw, self.session, self.dep, self.price = gw, session, dep, price
        self.send_client, self.send_upstream = send_client, send_upstream
        self.pending: deque[Response] = deque()  # reserved by response.create, waiting for response.created
        self.active: dict[str, Response] = {}  # by upstream response id
        self.count = 0
        self.context_tokens = 0  # the conversation's size after the last response: the next one's prompt estimate
        self.private = private_strings(dep)

    # --- the client's response.create --------------------------------------------------------------
    async def response_requested(self, text: str) -> bool:
        """Reserve a client's ``response.create``; False when refused (the client got an error event)."""
        event = _loads(text)
        if event is None or event.get("type") != "response.create":
            return True
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        params = event.get("response") if isinstance(event.get("response"), dict) else {}
        cap = params.get("max_output_tokens", params.get("max_response_output_tokens"))
        response = self._new(client_event_id=event_id, max_output=cap if isinstance(cap, int) else None)
        if not await self._reserve(response, event_id):
            return False
        self.pending.append(response)
        return True

    # --- the upstream's events ---------------------------------------------------------------------
    async def upstream_event(self, text: str) -> str:
        """Account for one upstream event; returns the text to relay (an error event scrubbed of secrets)."""
        if ('"response.' not in text and '"error"' not in text) or (len(text) > 2048 and 'audio.delta"' in text):
            return text  # most of the traffic (audio chunks) is relayed without being decoded
        event = _loads(text)
        if event is None:
            return text
        kind = event.get("type")
        if kind in TEXT_DELTAS:
            found = self.active.get(str(event.get("response_id")))
            if found is not None and isinstance(event.get("delta"), str):
                found.sent_chars += len(event["delta"])
        elif kind == "response.created":
            await self._created(event.get("response") or {})
        elif kind == "response.done":
            await self._done(event.get("response") or {})
        elif kind == "error":
            return await self._upstream_error(event)
        return text

    async def _created(self, response: dict[str, Any]) -> None:
        response_id = str(response.get("id"))
        found = self.pending.popleft() if self.pending else None
        if found is None:  # started by the upstream itself (turn detection): reserved now, cancelled if refused
            found = self._new()
            if not await self._reserve(found, None):
                await self.send_upstream(orjson.dumps({"type": "response.cancel", "response_id": response_id}).decode())
                return
        self.active[response_id] = found

    async def _done(self, response: dict[str, Any]) -> None:
        found = self.active.pop(str(response.get("id")), None)
        if found is None:  # a response whose reservation was refused (cancelled upstream): it still cost something
            found = self._new()
        usage = response.get("usage") if isinstance(response.get("usage"), dict) else None
        status = DONE_STATUS.get(str(response.get("status")), 200)
        await self._bill(found, usage, status, None if status == 200 else "upstream_error")

    async def _upstream_error(self, event: dict[str, Any]) -> str:
        error = event.get("error") if isinstance(event.get("error"), dict) else {}
        event_id = error.get("event_id")
        if event_id:  # the upstream refused a response.create of ours: that reservation is given back
            for response in list(self.pending):
                if response.client_event_id == event_id:
                    self.pending.remove(response)
                    await self._finish(response, CallResult(status=400, error_type="upstream_bad_request"))
                    break
        if isinstance(error.get("message"), str):
            error["message"] = scrub_upstream_text(error["message"][:1000], self.private)[:500]
        return orjson.dumps(event).decode()

    async def close(self) -> None:
        """The session ended. A response the upstream started is billed for the text it sent (no usage came);
        one it never started (still waiting for its ``response.created``) gives its reservation back."""
        waiting, started = list(self.pending), list(self.active.values())
        self.pending.clear()
        self.active.clear()
        for response in waiting:
            await self._finish(response, CallResult(status=499, error_type="session_closed"))
        for response in started:
            await self._bill(response, None, 499, "session_closed")

    # --- internals ---------------------------------------------------------------------------------
    def _new(self, *, client_event_id: str | None = None, max_output: int | None = None) -> Response:
        session = self.session
        self.count += 1
        ctx = RequestContext(
            request_id=f"{session.request_id}_r{self.count}",
            key=session.key,
            route=session.route,
            model=session.model,
            model_known=True,
            llm_provider=self.dep.provider,
            deployment_id=self.dep.id,
            group=session.group,
            deployment=self.dep,
            customer_id=session.customer_id,
            session_id=session.session_id,
            slot_held=True,
        )
        price = self.price
        ctx.estimated_prompt_tokens = self.context_tokens
        ctx.max_output_tokens = max(1, min(max_output or price.max_output_tokens, price.max_output_tokens))
        # The dearer of the text and audio rates: a response may be all audio.
        dearest_in = max(price.input, price.audio_input or Decimal(0))
        dearest_out = max(price.output, price.audio_output or Decimal(0))
        ctx.estimated_cost = ctx.estimated_prompt_tokens * dearest_in + ctx.max_output_tokens * dearest_out
        return Response(ctx=ctx, reserved=False, client_event_id=client_event_id)

    async def _reserve(self, response: Response, event_id: str | None) -> bool:
        ctx = response.ctx
        try:
            await self.gw.chain.pre_call(ctx)
        except ProxyRateLimitError as exc:
            exc.tag(llm_provider=ctx.llm_provider, model=ctx.model)
            error = exc.to_body()["error"]
            error["retry_after"] = exc.retry_after
            await self._refused(response, error, event_id)
            result = CallResult(status=429, error_type=f"rate_limit:{exc.limit_type}", limit_scope=exc.scope)
            await self._finish(response, result, limit_type=exc.limit_type, pre_called=True)
            return False
        except GatewayError as exc:  # the limiter store unusable in fail-closed mode, a blocked end user
            await self._refused(response, exc.to_body()["error"], event_id)
            await self._finish(response, CallResult(status=exc.status, error_type=exc.kind), pre_called=True)
            return False
        response.reserved = True
        return True

    async def _refused(self, response: Response, error: dict[str, Any], event_id: str | None) -> None:
        error["event_id"] = event_id
        payload = {"type": "error", "event_id": f"event_gw_{response.ctx.request_id}", "error": error}
        await self.send_client(orjson.dumps(payload).decode())

    async def _bill(self, response: Response, usage: dict[str, Any] | None, status: int, error: str | None) -> None:
        details_in, details_out = _object(usage, "input_token_details"), _object(usage, "output_token_details")
        cached = _object(details_in, "cached_tokens_details")
        if usage is not None:
            prompt, completion = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
            audio_in, audio_out = _int(details_in.get("audio_tokens")), _int(details_out.get("audio_tokens"))
            text_in = _int(details_in.get("text_tokens")) or max(0, prompt - audio_in)
            text_out = _int(details_out.get("text_tokens")) or max(0, completion - audio_out)
            cached_total = _int(details_in.get("cached_tokens"))
            cached_audio = _int(cached.get("audio_tokens"))
            cached_text = _int(cached.get("text_tokens")) or max(0, cached_total - cached_audio)
        else:  # cut short without usage: the prompt as estimated, the text it sent (4 characters a token)
            prompt, completion = response.ctx.estimated_prompt_tokens, (response.sent_chars + 3) // 4
            text_in, text_out = prompt, completion
            audio_in = audio_out = cached_total = cached_text = cached_audio = 0
        cost = realtime_cost(
            self.price, text_in=text_in, audio_in=audio_in, cached_text_in=cached_text, cached_audio_in=cached_audio,
            text_out=text_out, audio_out=audio_out,
        )  # fmt: skip
        if usage is not None:
            self.context_tokens = prompt + completion
        result = CallResult(
            status=status, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached_total, cost=cost,
            error_type=error,
        )  # fmt: skip
        extra = {"input_audio_tokens": audio_in, "output_audio_tokens": audio_out} if audio_in or audio_out else {}
        await self._finish(response, result, pre_called=response.reserved, extra=extra)

    async def _finish(
        self,
        response: Response,
        result: CallResult,
        *,
        limit_type: str | None = None,
        pre_called: bool | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        ctx = response.ctx
        result.deployment_id, result.llm_provider = self.dep.id, self.dep.provider
        result.latency_ms = (time.perf_counter() - ctx.started_at) * 1000
        event = spend_event(ctx, result, [], limit_type)
        event.metadata["realtime_session"] = self.session.request_id
        if extra:
            event.metadata.update(extra)
        await self.gw.finish(
            ctx, result, pre_called=response.reserved if pre_called is None else pre_called, event=event
        )
