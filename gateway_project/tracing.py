"""OpenTelemetry for the Django side (admin, REST API, self-service) and Celery tasks.

The maintained instrumentations do the work: ``DjangoInstrumentor`` adds its middleware (a SERVER span
per request, continuing the caller's ``traceparent``), ``CeleryInstrumentor`` a span per task published
and run (the trace carried in the message, so a task joins the request that sent it). /v1 is traced by
the proxy itself (``apps.proxy.tracing``): it never passes Django's handler. Nothing happens, and no
part of the SDK is imported, unless an OTLP endpoint is set (``settings.OTEL_TRACES_ENABLED``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


def django_tracing_setup() -> None:
    """Instrument Django and Celery's publishing in the web process; before Django's handler is built,
    because the instrumentation adds a middleware that the handler reads once."""
    if not settings.OTEL_TRACES_ENABLED:
        return
    # The SDK and the instrumentations load only when tracing is on.
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    from apps.common.otel import tracer_provider_create  # imports the SDK: only when tracing is on

    provider = tracer_provider_create()
    DjangoInstrumentor().instrument(tracer_provider=provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)


def celery_tracing_setup() -> TracerProvider | None:
    """Instrument task execution in a Celery worker process (after the fork: the exporter's connections and
    the batch thread belong to the process that uses them); the provider, for the caller to shut down."""
    if not settings.OTEL_TRACES_ENABLED:
        return None
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    from apps.common.otel import tracer_provider_create  # imports the SDK: only when tracing is on

    instrumentor = CeleryInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        return None
    provider = tracer_provider_create()
    instrumentor.instrument(tracer_provider=provider)
    return provider
