"""What tracing costs one /v1 request: the proxy's own span path against the SDK's Tracer, and tracing off.

  python bench/otel_bench.py [--requests 50000]

Runs the calls a traced chat request makes (``Tracing.request``, one upstream attempt's CLIENT span,
the SERVER span built at the end with the GenAI and gateway attributes) on a realistic request context,
in process, and prints CPU microseconds per request (thread CPU time, so a busy machine inflates it less
than wall time):

- ``off``: tracing not configured: what the flows test (``gw.tracing is None``, ``ctx.trace is None``);
- ``sampled out``: tracing on, the sampler says no (OTEL_TRACES_SAMPLER=always_off, or ratio 0);
- ``sampled (inline)``: at sampling 1.0, the time on the event loop (spans built and queued);
- ``export (batch thread)``: the OTLP protobuf encoding the batch thread does for those two spans, off
  the request but on the same interpreter (it shares the GIL, so it is part of what a request costs);
- ``SDK Tracer (for comparison)``: the same two spans and attributes through ``Tracer.start_span``.

Nothing is sent anywhere: the exporter encodes and drops. Needs no database.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings.test")
os.environ.setdefault("GATEWAY_RUN_DIR", "/tmp/otel-bench-run")

import django

django.setup()

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF  # noqa: E402
from opentelemetry.trace import SpanKind, set_span_in_context  # noqa: E402

from apps.proxy.context import CallResult, KeyContext, RequestContext  # noqa: E402
from apps.proxy.registry import Deployment  # noqa: E402
from apps.proxy.tracing import Tracing  # noqa: E402

HEADERS = {b"traceparent": b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", b"authorization": b"Bearer x"}


class EncodingExporter(SpanExporter):
    """Encodes each batch as the OTLP exporters do, then drops it; counts the time spent."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.spans = 0

    def export(self, spans) -> SpanExportResult:
        started = time.thread_time()  # this (the batch) thread's CPU: neighbours' load does not count
        encode_spans(spans).SerializeToString()
        self.seconds += time.thread_time() - started
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _context(deployment: Deployment) -> RequestContext:
    key = KeyContext(
        key_id=12,
        key_alias="checkout-service",
        team_id=3,
        team_name="Payments",
        organization_id=1,
        organization_name="Acme",
        user_id=7,
        allowed_models=None,
        scopes=(),
    )
    ctx = RequestContext(request_id="req_0123456789abcdef0000000001", key=key, route="/v1/chat/completions")
    ctx.model, ctx.llm_provider, ctx.deployment_id = "gpt-4o-mini", "openai", deployment.id
    ctx.body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 64}
    return ctx


def _deployment() -> Deployment:
    return Deployment(
        id=5,
        model_name="gpt-4o-mini",
        provider="openai",
        model="gpt-4o-mini-2024-07-18",
        api_base="http://127.0.0.1:8001/v1",
    )


def traced_request(tracing: Tracing, dep: Deployment, ctx: RequestContext, result: CallResult) -> None:
    trace = tracing.request("chat", "POST", HEADERS)
    trace.ctx, ctx.trace = ctx, trace
    span = trace.attempt(dep, "chat")
    _ = span.traceparent
    span.end(200)
    trace.response_model = dep.model
    trace.result = result
    trace.end()


def per_request(fn, n: int) -> float:
    """CPU µs of this thread per call: on a shared machine, wall time would count the neighbours' load."""
    for _ in range(min(n, 2000)):
        fn()
    started = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50_000)
    n = parser.parse_args().requests
    dep = _deployment()
    result = CallResult(status=200, prompt_tokens=24, completion_tokens=64, cost=Decimal("0.000152"))
    ctx = _context(dep)

    tracing_off = None

    def off() -> None:
        if tracing_off is not None:
            raise AssertionError
        if ctx.trace is not None and ctx.trace is False:
            raise AssertionError

    # The queue holds every span and the batch thread sleeps during the measurement (it would take the GIL
    # from the loop): the inline cost first, then the flush encodes everything, timed on its own.
    queue = 4 * n
    exporter = EncodingExporter()
    processor = BatchSpanProcessor(
        exporter, max_queue_size=queue, max_export_batch_size=queue, schedule_delay_millis=10**8
    )
    tracing = Tracing(processor)
    inline = per_request(lambda: traced_request(tracing, dep, ctx, result), n)
    tracing.provider.force_flush()
    export = exporter.seconds / max(exporter.spans, 1) * 2 * 1e6

    sampled_out = Tracing(BatchSpanProcessor(EncodingExporter()))
    sampled_out.sampler, sampled_out.parent_decides = ALWAYS_OFF, False
    dropped = per_request(lambda: traced_request(sampled_out, dep, ctx, result), n)

    provider = TracerProvider(resource=tracing.resource)
    provider.add_span_processor(
        BatchSpanProcessor(
            EncodingExporter(), max_queue_size=queue, max_export_batch_size=queue, schedule_delay_millis=10**8
        )
    )
    tracer = provider.get_tracer("bench")

    def sdk_tracer() -> None:
        server = tracer.start_span(
            "chat gpt-4o-mini", kind=SpanKind.SERVER, attributes={"gen_ai.operation.name": "chat"}
        )
        client = tracer.start_span("chat x", context=set_span_in_context(server), kind=SpanKind.CLIENT)
        client.set_attributes(
            {"gen_ai.provider.name": "openai", "gen_ai.request.model": dep.model, "server.address": "h"}
        )
        client.end()
        server.set_attributes(
            {
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.model": dep.model,
                "gen_ai.usage.input_tokens": 24,
                "gen_ai.usage.output_tokens": 64,
                "gen_ai.request.max_tokens": 64,
                "gateway.key.alias": "checkout-service",
                "gateway.team.id": 3,
                "gateway.organization.id": 1,
                "gateway.cost": 0.000152,
                "http.response.status_code": 200,
            }
        )
        server.end()

    sdk = per_request(sdk_tracer, n)
    print(f"requests per measurement: {n}")
    print("| path | µs per request |")
    print("|---|---:|")
    print(f"| off (no OTEL_EXPORTER_OTLP_ENDPOINT) | {per_request(off, n):.2f} |")
    print(f"| sampled out (always_off / ratio 0) | {dropped:.2f} |")
    print(f"| sampled, 1.0 (inline, on the event loop) | {inline:.2f} |")
    print(f"| export: OTLP encoding of its 2 spans (batch thread) | {export:.2f} |")
    print(f"| sampled, 1.0: inline + export | {inline + export:.2f} |")
    print(f"| SDK Tracer.start_span, same spans (for comparison) | {sdk:.2f} |")
    tracing.shutdown()
    provider.shutdown()


if __name__ == "__main__":
    main()
