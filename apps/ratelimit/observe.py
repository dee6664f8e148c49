"""Turns one finished /v1 request into metric samples.

Requests that reach the limiter chain are counted by ``MetricsMiddleware.post_call``; the ones answered
before it (a 401, an unknown model's 404, a 400 or 413 body, a listing) by ``request_unmetered`` or
``request_unauthenticated``. Each request is counted once: ``LimiterState.metered`` marks it when it is.
"""

from __future__ import annotations

import time

from apps.proxy.context import FALLBACK_PROVIDER, CallResult, RequestContext
from apps.ratelimit import metrics as m
from apps.ratelimit.plan import Plan, nano_to_usd
from apps.ratelimit.state import limiter_state

_children: dict[tuple, object] = {}


def child(metric, *labels: str):
    """``metric.labels(*labels)``, remembered: the same few label sets repeat on every request."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        if len(_children) > 50_000:
            _children.clear()
        found = _children[key] = metric.labels(*labels)
    return found


def request_started(ctx: RequestContext) -> None:
    limiter_state(ctx).metered = True
    child(m.IN_FLIGHT, m.bounded("route", ctx.route)).inc()


# The OpenAI SDK's exception names, so dashboards read the same for every provider (bounded set).
_BY_STATUS = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    408: "Timeout",
    409: "ConflictError",
    413: "BadRequestError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    499: "ClientDisconnect",
    502: "APIConnectionError",
    503: "ServiceUnavailableError",
    504: "Timeout",
}
_BY_ERROR_TYPE = {
    "client_disconnect": "ClientDisconnect",
    "upstream_timeout": "Timeout",
    "upstream_connection": "APIConnectionError",
    "upstream_rate_limit": "RateLimitError",
    "limiter_unavailable": "LimiterUnavailableError",
}


def exception_class(ctx: RequestContext, result: CallResult) -> str:
    """``Openai.ProxyRateLimitError`` for our refusals, ``<Provider>.<OpenAI SDK error name>`` otherwise."""
    refusal = limiter_state(ctx).refusal
    if refusal is not None:
        try:
            refusal.tag(llm_provider=ctx.llm_provider, model=ctx.model)
            return refusal.exception_class
        except Exception:  # a metric must never turn a refusal into a 500
            return "Gateway.ProxyRateLimitError"
    provider = result.llm_provider if result.llm_provider != "gateway" else ctx.llm_provider
    name = _BY_ERROR_TYPE.get(result.error_type or "") or _BY_STATUS.get(result.status)
    if name is None:
        name = "InternalServerError" if result.status >= 500 else "APIError"
    return f"{m.provider_class(provider)}.{name}"


class _Series:
    """The metric children one kind of request touches, looked up once per label set, not per request."""

    __slots__ = ("completion", "in_flight", "labels", "latency", "prompt", "requests", "spend", "ttft")

    def __init__(self, route: str, provider: str, model: str, team: str, alias: str, status: str) -> None:
        self.labels = (route, provider, model, team, alias, status)
        self.in_flight = child(m.IN_FLIGHT, route)
        self.requests = child(m.REQUESTS, route, provider, model, team, alias, status)
        self.latency = child(m.LATENCY, route, provider, model)
        self.ttft = child(m.TTFT, provider, model)
        self.prompt = child(m.TOKENS, provider, model, team, "prompt")
        self.completion = child(m.TOKENS, provider, model, team, "completion")
        self.spend = child(m.SPEND, provider, model, team)


_series: dict[tuple, _Series] = {}


def _series_for(ctx: RequestContext, status: int) -> _Series:
    raw = (ctx.route, ctx.llm_provider, ctx.model, ctx.key.team_name, ctx.key.key_alias, status)
    found = _series.get(raw)
    if found is None:
        if len(_series) > 10_000:
            _series.clear()
        found = _series[raw] = _Series(
            m.bounded("route", ctx.route),
            m.bounded("provider", ctx.llm_provider),
            m.bounded("model", ctx.model),
            m.bounded("team", ctx.key.team_name),
            m.bounded("key_alias", ctx.key.key_alias),
            str(status),
        )
    return found


def request_finished(ctx: RequestContext, result: CallResult) -> None:
    series = _series_for(ctx, result.status)
    route, provider, model, team, alias, status = series.labels
    series.in_flight.dec()
    series.requests.inc()
    if result.status >= 400:
        failure = m.bounded("exception_class", exception_class(ctx, result))
        child(m.FAILURES, failure, status, provider, model, team, alias, route).inc()
    series.latency.observe(max(0.0, result.latency_ms) / 1000.0)
    if result.ttft_ms is not None:
        series.ttft.observe(max(0.0, result.ttft_ms) / 1000.0)
    if result.prompt_tokens:
        series.prompt.inc(result.prompt_tokens)
    if result.completion_tokens:
        series.completion.inc(result.completion_tokens)
    if result.cost > 0:
        series.spend.inc(float(result.cost))
    state = limiter_state(ctx)
    deployment_id = result.deployment_id or ctx.deployment_id
    if deployment_id is not None and state.refusal is None and result.error_type != "client_disconnect":
        outcome = "failure" if result.status >= 500 or result.status == 429 else "success"
        child(m.DEPLOYMENT_REQUESTS, m.bounded("deployment_id", str(deployment_id)), provider, model, outcome).inc()
    plan = state.plan
    if plan is not None and plan.committed and plan.checks:
        _remaining(plan, team, alias)


def _remaining(plan: Plan, team: str, alias: str) -> None:
    """Remaining requests/tokens/budget of the key and team scopes after this request's reservation."""
    for check in plan.checks:
        if check.remaining is None or check.check_only or check.scope not in ("key", "team"):
            continue
        labels = (check.scope, team, alias if check.scope == "key" else "")
        if check.limit_type == "requests":
            child(m.REMAINING_REQUESTS, *labels).set(max(0.0, check.remaining))
        elif check.limit_type == "tokens":
            child(m.REMAINING_TOKENS, *labels).set(max(0.0, check.remaining))
        elif check.limit_type == "budget":
            child(m.REMAINING_BUDGET, *labels).set(float(nano_to_usd(max(0.0, check.remaining))))


def request_unmetered(ctx: RequestContext, result: CallResult) -> None:
    """A keyed request the limiter chain never counted (answered before it, or a listing): count it once.

    The model label is the requested name only when it resolved for this key; any other name (a client
    can send millions) is ``unknown``, so attacker-chosen names never become label values.
    """
    state = limiter_state(ctx)
    if state.metered:
        return
    state.metered = True
    model = ctx.model if ctx.model_known else (m.UNKNOWN if ctx.model else "")
    result.llm_provider = ctx.llm_provider
    failure = exception_class(ctx, result)
    _count(ctx.route, ctx.llm_provider, model, ctx.key.team_name, ctx.key.key_alias, result, failure, ctx.started_at)


def request_unauthenticated(
    route: str, status: int, error_type: str | None, started: float, failure: str | None = None
) -> None:
    """A request answered before it had a key (401, an unknown URL, the key store down): provider ``gateway``."""
    result = CallResult(status=status, error_type=error_type)
    if failure is None:
        name = _BY_ERROR_TYPE.get(error_type or "") or _BY_STATUS.get(status) or "APIError"
        failure = f"{m.provider_class(FALLBACK_PROVIDER)}.{name}"
    _count(route, FALLBACK_PROVIDER, "", "", "", result, failure, started)


def _count(
    route: str, provider: str, model: str, team: str, alias: str, result: CallResult, failure: str, started: float
) -> None:
    route, provider, model = m.bounded("route", route), m.bounded("provider", provider), m.bounded("model", model)
    team, alias, status = m.bounded("team", team), m.bounded("key_alias", alias), str(result.status)
    child(m.REQUESTS, route, provider, model, team, alias, status).inc()
    if result.status >= 400:
        child(m.FAILURES, m.bounded("exception_class", failure), status, provider, model, team, alias, route).inc()
    child(m.LATENCY, route, provider, model).observe(max(0.0, time.perf_counter() - started))
