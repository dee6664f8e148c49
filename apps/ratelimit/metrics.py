"""The gateway's own Prometheus metrics, served at ``/metrics`` beside django-prometheus's.

Several uvicorn workers: set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory) in the environment of the
server before it starts; every worker then writes its samples there and the scrape merges them
(django-prometheus's export view switches to the multiprocess collector on that variable). Gauges say
how they merge: in-flight sums over live workers, remaining limits take the most recent value.

Labels are bounded: a value seen for the first time after ``MAX_LABEL_VALUES`` distinct ones is reported
as "other", and a raw virtual key is never a label (keys appear by their admin-given alias only).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from apps.proxy.context import FALLBACK_PROVIDER

MAX_LABEL_VALUES = 500
MAX_LABEL_LENGTH = 80
OTHER = "other"
# The model label of a request whose model name did not resolve (a 404, or no model at all yet): the
# name is the client's, unbounded, and must not become a label value.
UNKNOWN = "unknown"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

REQUESTS = Counter(
    "gateway_requests",
    "Requests answered on /v1, by route, provider, model, team, key alias and HTTP status.",
    ["route", "provider", "model", "team", "key_alias", "status"],
)
FAILURES = Counter(
    "gateway_failures",
    "Failed /v1 requests; exception_class is '<Provider>.<Error>', e.g. 'Openai.ProxyRateLimitError'.",
    ["exception_class", "exception_status", "provider", "model", "team", "key_alias", "route"],
)
LATENCY = Histogram(
    "gateway_request_latency_seconds",
    "Time from request start to the end of the response.",
    ["route", "provider", "model"],
    buckets=_LATENCY_BUCKETS,
)
TTFT = Histogram(
    "gateway_time_to_first_token_seconds",
    "Time to the first streamed token.",
    ["provider", "model"],
    buckets=_LATENCY_BUCKETS,
)
TOKENS = Counter("gateway_tokens", "Tokens used, by kind (prompt, completion).", ["provider", "model", "team", "kind"])
SPEND = Counter("gateway_spend_usd", "Cost of answered requests in USD.", ["provider", "model", "team"])
IN_FLIGHT = Gauge("gateway_in_flight_requests", "Requests being served now.", ["route"], multiprocess_mode="livesum")
REMAINING_REQUESTS = Gauge(
    "gateway_remaining_requests",
    "Requests left in the current minute for the tightest limit of a team or key.",
    ["scope", "team", "key_alias"],
    multiprocess_mode="mostrecent",
)
REMAINING_TOKENS = Gauge(
    "gateway_remaining_tokens",
    "Tokens left in the current minute for the tightest limit of a team or key.",
    ["scope", "team", "key_alias"],
    multiprocess_mode="mostrecent",
)
REMAINING_BUDGET = Gauge(
    "gateway_remaining_budget_usd",
    "Budget left in the current window of a team or key.",
    ["scope", "team", "key_alias"],
    multiprocess_mode="mostrecent",
)
DEPLOYMENT_REQUESTS = Counter(
    "gateway_deployment_requests",
    "Calls that reached a deployment, by outcome (success, failure): its health as a rate.",
    ["deployment_id", "provider", "model", "outcome"],
)
BACKEND_ERRORS = Counter(
    "gateway_ratelimit_backend_errors",
    "Counter-store calls that failed or timed out, by fail mode and operation (reserve, settle).",
    ["mode", "operation"],
)

FAIL_OPEN = Counter(
    "gateway_ratelimit_fail_open",
    "Requests admitted uncounted because the counter store was unusable (fail mode open), by reason: "
    "connect_error, connection_lost, stalled, breaker_open, error_reply, deadline.",
    ["reason"],
)
FAIL_CLOSED = Counter(
    "gateway_ratelimit_fail_closed",
    "Requests refused with 503 because the counter store was unusable (fail mode closed), by reason.",
    ["reason"],
)

AUTH_LOOKUPS = Counter(
    "gateway_auth_lookups",
    "Database lookups of keys the auth cache did not hold, by outcome (found, unknown, error), and "
    "source_limited: refused by the per-source miss limit without a lookup.",
    ["outcome"],
)
SHED = Counter(
    "gateway_overload_shed",
    "New /v1 requests refused with 503 because the worker's event loop ran behind (apps/proxy/overload.py), "
    "by the key's priority ('uncached': a key the worker had not authenticated yet).",
    ["priority"],
)
LOOP_LAG = Gauge(
    "gateway_event_loop_lag_seconds",
    "How late the event loop runs (smoothed), the worst live worker; what overload shedding compares.",
    multiprocess_mode="livemax",
)

_seen: dict[str, set[str]] = {}


def bounded(label: str, value: str | None) -> str:
    """Cap label cardinality per worker: new values past the cap collapse into "other"."""
    text = (value or "")[:MAX_LABEL_LENGTH]
    seen = _seen.setdefault(label, set())
    if text in seen:
        return text
    if len(seen) >= MAX_LABEL_VALUES:
        return OTHER
    seen.add(text)
    return text


def provider_class(provider: str | None) -> str:
    """``openai`` -> ``Openai``; ``openai_compatible`` -> ``OpenaiCompatible`` (as ``ProxyRateLimitError``)."""
    return (provider or FALLBACK_PROVIDER).replace("_", " ").title().replace(" ", "")


def backend_error(mode: str, operation: str) -> None:
    BACKEND_ERRORS.labels(mode, operation).inc()


def fail_mode_applied(mode: str, reason: str) -> None:
    """One request decided by the fail mode instead of its counters (reserve only)."""
    (FAIL_OPEN if mode == "open" else FAIL_CLOSED).labels(reason).inc()


def auth_lookup(outcome: str) -> None:
    AUTH_LOOKUPS.labels(outcome).inc()
