"""Prometheus counters of the sinks, labelled by sink kind only (never a sink's name, URL or secret).

They are counted in the Celery workers that ingest and deliver: with ``PROMETHEUS_MULTIPROC_DIR`` set for
the workers too (the same directory as the web processes'), ``/metrics`` serves them with the rest.
"""

from __future__ import annotations

from prometheus_client import Counter

DELIVERED = Counter("gateway_sink_records_delivered", "Records a log sink accepted, by sink kind.", ["sink_type"])
DROPPED = Counter(
    "gateway_sink_records_dropped",
    "Records not delivered to a log sink, by sink kind and reason (queue_full, retries_exhausted).",
    ["sink_type", "reason"],
)
FAILURES = Counter(
    "gateway_sink_delivery_failures", "Failed delivery attempts of a batch, by sink kind.", ["sink_type"]
)
