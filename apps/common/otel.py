"""The OpenTelemetry SDK parts every traced process shares: the resource, the OTLP exporter, the batch processor.

Imported only when ``settings.OTEL_TRACES_ENABLED`` (an OTLP endpoint is set): with tracing off no
process loads the SDK at all. What the variables mean is the specification's, and the SDK reads most
of them itself (so they behave as in every other OpenTelemetry service): the exporters read the
endpoint, headers, TLS and timeouts (``OTEL_EXPORTER_OTLP_*``), the batch processor its schedule and
queue (``OTEL_BSP_*``), the resource ``OTEL_RESOURCE_ATTRIBUTES``, the sampler ``OTEL_TRACES_SAMPLER``
and ``_ARG``. Settings decide only whether tracing is on, the protocol and the default service name.
"""

from __future__ import annotations

from django.conf import settings
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter


def resource_create() -> Resource:
    """``service.name`` from OTEL_SERVICE_NAME (default ``llm-gateway``), plus OTEL_RESOURCE_ATTRIBUTES."""
    return Resource.create({SERVICE_NAME: settings.OTEL_SERVICE_NAME})


def span_exporter_create() -> SpanExporter:
    """The OTLP exporter for ``OTEL_EXPORTER_OTLP_PROTOCOL`` (http/protobuf or grpc); it reads its endpoint."""
    if settings.OTEL_TRACES_PROTOCOL == "grpc":
        # grpcio is imported only by processes that export over gRPC (it starts threads of its own).
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter()


def span_processor_create() -> BatchSpanProcessor:
    """Finished spans go to a queue; a background thread exports them in batches, off every request."""
    return BatchSpanProcessor(span_exporter_create())


def tracer_provider_create(processor: BatchSpanProcessor | None = None) -> TracerProvider:
    """A provider with the resource, the sampler (the SDK's, from OTEL_TRACES_SAMPLER: parent-based
    always-on when unset) and a batch processor (``processor``, else a new one). The maintained
    instrumentations (Django's views, Celery's tasks) get it; /v1 records through its parts."""
    provider = TracerProvider(resource=resource_create())
    provider.add_span_processor(processor or span_processor_create())
    return provider
