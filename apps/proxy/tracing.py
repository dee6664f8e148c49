"""OpenTelemetry traces for /v1: one SERVER span per request, one CLIENT span per upstream attempt.

Loaded only when an OTLP endpoint is set (``Gateway.startup`` imports this module then, and owns the
one ``Tracing``); with tracing off the flows test ``gw.tracing is None`` / ``ctx.trace is None`` and do
nothing else. A request continues the client's W3C ``traceparent`` (and ``tracestate``); every attempt
carries its own span's ``traceparent`` to the upstream, so the upstream's spans join the same trace.

Why the spans are not made through ``Tracer.start_span``: the SDK's live ``Span`` (a lock, attribute
cleaning per value, context lookups) cost 4-5 times what this does on this machine (bench/otel_bench.py).
A request's attributes are known at its end, so each span is built once, finished, as the SDK's own
``ReadableSpan`` and handed to the SDK's ``BatchSpanProcessor``: the sampler (OTEL_TRACES_SAMPLER), the
resource, the batching thread and the OTLP exporters are the SDK's, unchanged.

Attributes follow the GenAI semantic conventions (``gen_ai.*``) plus the gateway's own (``gateway.*``);
limit refusals, retries and fallbacks are span events. Prompt and completion text is recorded only for
teams that opted in (``Team.trace_content``), as ``gen_ai.input.messages`` / ``gen_ai.output.messages``.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.sampling import DEFAULT_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState, set_span_in_context
from opentelemetry.trace.status import Status, StatusCode

from apps.common.otel import span_processor_create, tracer_provider_create
from apps.proxy.trace_attributes import (
    OPERATIONS,
    PROVIDERS,
    content_attributes,
    request_attributes,
    result_attributes,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from apps.proxy.context import CallResult, RequestContext
    from apps.proxy.registry import Deployment

SAMPLED = TraceFlags(TraceFlags.SAMPLED)
UNSET = Status(StatusCode.UNSET)
_HEX = frozenset("0123456789abcdef")


def parse_traceparent(value: bytes | None) -> tuple[int, int, int] | None:
    """(trace id, parent span id, flags) from a W3C ``traceparent``; None for anything malformed."""
    if not value or len(value) < 55:
        return None
    try:
        text = value.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    parts = text.split("-")
    if len(parts) < 4 or len(parts[0]) != 2 or parts[0] == "ff" or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    if (parts[0] == "00" and len(parts) != 4) or len(parts[3]) != 2 or not _HEX.issuperset("".join(parts[:4])):
        return None
    trace_id, span_id = int(parts[1], 16), int(parts[2], 16)
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, int(parts[3], 16) & 0x01


class Tracing:
    """What the gateway's traces share for the life of one ``Gateway``: the SDK's provider (resource,
    sampler), its batch processor and exporter. ``shutdown`` exports what is queued."""

    def __init__(self, processor: BatchSpanProcessor | None = None) -> None:
        self.processor = processor or span_processor_create()
        self.provider = tracer_provider_create(self.processor)
        self.resource = self.provider.resource
        self.sampler = self.provider.sampler
        # The default sampler (OTEL_TRACES_SAMPLER unset or parentbased_always_on) decides by the parent's flag
        # alone: made here inline, the same decision without building a parent context for the SDK to read.
        self.parent_decides = self.sampler.get_description() == DEFAULT_ON.get_description()
        self.scope = InstrumentationScope("apps.proxy")
        self._servers: dict[str, tuple[str, int | None]] = {}

    def request(self, op: str, method: str, headers: dict[bytes, bytes]) -> RequestTrace:
        """The trace of a request that just arrived: the client's trace continued, or a new one."""
        parent = parse_traceparent(headers.get(b"traceparent"))
        trace_state = None
        if parent is None:
            trace_id = random.getrandbits(128) or 1
            parent_span_id = flags = 0
        else:
            trace_id, parent_span_id, flags = parent
            raw_state = headers.get(b"tracestate")
            if raw_state:
                trace_state = TraceState.from_header([raw_state.decode("latin-1")])
        if self.parent_decides:
            sampled = bool(flags) if parent is not None else True
        else:
            parent_context = None
            if parent is not None:
                parent_span = NonRecordingSpan(
                    SpanContext(trace_id, parent_span_id, True, TraceFlags(flags), trace_state or TraceState())
                )
                parent_context = set_span_in_context(parent_span)
            decision = self.sampler.should_sample(
                parent_context, trace_id, op, SpanKind.SERVER, trace_state=trace_state
            )
            sampled = decision.decision.is_sampled()
        return RequestTrace(self, op, method, trace_id, parent_span_id, sampled, trace_state)

    def server_of(self, dep: Deployment) -> tuple[str, int | None]:
        """(server.address, server.port) of a deployment's api_base, parsed once per base URL."""
        found = self._servers.get(dep.api_base)
        if found is None:
            parts = urlsplit(dep.api_base or "")
            try:
                port = parts.port
            except ValueError:
                port = None
            found = (parts.hostname or "", port)
            if len(self._servers) < 10_000:
                self._servers[dep.api_base] = found
        return found

    def export(self, span: ReadableSpan) -> None:
        self.processor.on_end(span)

    def shutdown(self) -> None:
        """Export every queued span, then stop the exporter (the gateway's shutdown; blocking)."""
        self.provider.shutdown()


class RequestTrace:
    """One request's server span, built when the request ends. ``recording`` False (not sampled): no
    span is exported, but the upstream still gets the trace continued (the client's own parent)."""

    __slots__ = (
        "attempts",
        "context",
        "ctx",
        "error_type",
        "events",
        "method",
        "op",
        "output",
        "parent",
        "recording",
        "response_model",
        "result",
        "span_id",
        "start_ns",
        "status",
        "trace_id",
        "trace_id_hex",
        "trace_state",
        "tracestate",
        "tracing",
    )

    def __init__(
        self,
        tracing: Tracing,
        op: str,
        method: str,
        trace_id: int,
        parent_span_id: int,
        recording: bool,
        trace_state: TraceState | None,
    ) -> None:
        self.tracing = tracing
        self.op = op
        self.method = method
        self.start_ns = time.time_ns()
        self.trace_id = trace_id
        self.trace_id_hex = f"{trace_id:032x}"
        self.recording = recording
        self.trace_state = trace_state
        self.tracestate = trace_state.to_header() if trace_state else None  # sent on to the upstream
        # Not recording: attempts name the client's span as their parent, as a non-recording span would,
        # and no span context is built (nothing will be exported).
        self.span_id = parent_span_id if parent_span_id and not recording else random.getrandbits(64) or 1
        self.parent: SpanContext | None = None
        self.context: SpanContext | None = None
        if recording:
            state = trace_state or TraceState()
            if parent_span_id:
                self.parent = SpanContext(trace_id, parent_span_id, True, SAMPLED, state)
            self.context = SpanContext(trace_id, self.span_id, False, SAMPLED, state)
        self.events: list[Event] = []
        self.attempts = 0
        self.ctx: RequestContext | None = None
        self.result: CallResult | None = None
        self.status = 200
        self.error_type: str | None = None
        self.response_model: str | None = None
        self.output: str | None = None

    @property
    def traceparent(self) -> str:
        flags = "01" if self.recording else "00"
        return f"00-{self.trace_id_hex}-{self.span_id:016x}-{flags}"

    def attempt(self, dep: Deployment, op: str) -> AttemptTrace:
        """The CLIENT span of one upstream call; its ``traceparent`` goes to the upstream."""
        self.attempts += 1
        return AttemptTrace(self, dep, op)

    def event(self, name: str, attributes: dict[str, Any]) -> None:
        if self.recording:
            self.events.append(Event(name, {k: v for k, v in attributes.items() if v is not None}))

    def failed(self, status: int, error_type: str | None) -> None:
        self.status, self.error_type = status, error_type

    def end(self) -> None:
        """Build the server span from what the request became and queue it for export."""
        if not self.recording:
            return
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATIONS.get(self.op, self.op),
            "http.request.method": self.method,
        }
        ctx, result = self.ctx, self.result
        status = result.status if result is not None else self.status
        error_type = result.error_type if result is not None else self.error_type
        name = self.op
        if ctx is not None:
            name = request_attributes(attributes, ctx, self.op)
            if result is not None:
                result_attributes(attributes, result)
            if self.response_model:
                attributes["gen_ai.response.model"] = self.response_model
            if ctx.key.trace_content:
                content_attributes(attributes, ctx.body, self.output)
        if self.attempts > 1:
            attributes["gateway.retries"] = self.attempts - 1
        attributes["http.response.status_code"] = status
        if status >= 400 and error_type:
            attributes["error.type"] = error_type
        span_status = Status(StatusCode.ERROR, error_type) if status >= 500 else UNSET
        span = ReadableSpan(
            name,
            self.context,
            self.parent,
            self.tracing.resource,
            attributes,
            tuple(self.events),
            (),
            SpanKind.SERVER,
            None,
            span_status,
            self.start_ns,
            time.time_ns(),
            self.tracing.scope,
        )
        self.tracing.export(span)


class AttemptTrace:
    """One upstream call's CLIENT span: started before the request goes out, ended when its answer (its
    headers, for a stream) is in or it failed."""

    __slots__ = ("dep", "op", "request", "span_id", "start_ns", "traceparent")

    def __init__(self, request: RequestTrace, dep: Deployment, op: str) -> None:
        self.request = request
        self.dep = dep
        self.op = op
        self.start_ns = time.time_ns()
        if request.recording:
            self.span_id = random.getrandbits(64) or 1
            self.traceparent = f"00-{request.trace_id_hex}-{self.span_id:016x}-01"
        else:
            self.span_id = 0
            self.traceparent = request.traceparent

    def end(self, status: int, error_type: str | None = None) -> None:
        request = self.request
        if not request.recording:
            return
        dep = self.dep
        address, port = request.tracing.server_of(dep)
        operation = OPERATIONS.get(self.op, self.op)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": PROVIDERS.get(dep.provider, dep.provider),
            "gen_ai.request.model": dep.model,
            "gateway.deployment.id": dep.id,
            "http.response.status_code": status,
        }
        if address:
            attributes["server.address"] = address
        if port:
            attributes["server.port"] = port
        if error_type:
            attributes["error.type"] = error_type
        context = SpanContext(request.trace_id, self.span_id, False, SAMPLED, request.context.trace_state)
        span = ReadableSpan(
            f"{operation} {dep.model}",
            context,
            request.context,
            request.tracing.resource,
            attributes,
            (),
            (),
            SpanKind.CLIENT,
            None,
            Status(StatusCode.ERROR, error_type) if error_type else UNSET,
            self.start_ns,
            time.time_ns(),
            request.tracing.scope,
        )
        request.tracing.export(span)
