"""Executes a request's plan: one atomic reservation before the call, one settlement after it.

This is where the fail mode lives: when the counter store is unusable (the backend's health verdict,
never a timer on a busy worker), "open" lets the request through uncounted, "closed" refuses it with a
503. Every such decision is counted with its reason (``gateway_ratelimit_fail_open_total{reason}`` /
``gateway_ratelimit_fail_closed_total{reason}``, plus ``gateway_ratelimit_backend_errors_total``) and
logged once per interval with a count, never once per request.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math

from django.conf import settings

from apps.common.intervallog import IntervalLog
from apps.proxy.context import CallResult, RequestContext
from apps.proxy.errors import GatewayError
from apps.ratelimit import budget_fit, metrics
from apps.ratelimit.backends import BackendUnavailable, CounterBackend
from apps.ratelimit.errors import LimiterUnavailableError, ProxyRateLimitError
from apps.ratelimit.plan import COUNTER, SLOTS, Check, Plan, Refusal, usd_to_nano

log = logging.getLogger(__name__)

_UNITS = {"requests": "requests per minute", "tokens": "tokens per minute", "concurrent_requests": "parallel requests"}


@functools.cache
def _events() -> IntervalLog:
    """Built on first use, not at import: its interval is a setting (``LOG_EVENT_INTERVAL_SECONDS``)."""
    return IntervalLog(log, interval=settings.LOG_EVENT_INTERVAL_SECONDS)


def _backend_failed(where: str, exc: BaseException) -> None:
    """Count every failure (by operation, and by reason for the fail-mode decisions); log the first at once
    and then one line per interval with how many followed, whatever their operation or reason."""
    mode = settings.RATELIMIT_FAIL_MODE
    reason = getattr(exc, "reason", "unknown")
    metrics.backend_error(mode, where)
    if where == "reserve":
        metrics.fail_mode_applied(mode, reason)
    _events().event("backend", f"rate-limit backend unavailable during {where} ({reason}); fail mode {mode}")


async def plan_reserve(ctx: RequestContext, plan: Plan, backend: CounterBackend) -> None:
    """Reserve every check of the plan, or raise the refusal of the first one that does not fit."""
    if not plan.checks:
        plan.committed = True
        return
    for clamps in range(budget_fit.MAX_CLAMPS + 1):
        try:
            refusal = await backend.reserve(plan.checks)
        except BackendUnavailable as exc:
            _backend_failed("reserve", exc)
            if settings.RATELIMIT_FAIL_MODE == "closed":
                raise LimiterUnavailableError().tag(llm_provider=ctx.llm_provider, model=ctx.model) from exc
            plan.skipped = True
            return
        if refusal is None:
            break
        check = plan.checks[refusal.index]
        # A budget too small for max_tokens, on a key that asks for it: lower max_tokens and reserve again
        # (nothing was charged: the refused reservation was all-or-nothing).
        if clamps == budget_fit.MAX_CLAMPS or not budget_fit.clamp_max_tokens(ctx, plan, check, refusal):
            raise refusal_error(ctx, check, refusal)
    plan.committed = True
    _success_headers(ctx, plan.checks)


def refusal_error(ctx: RequestContext, check: Check, refusal: Refusal) -> ProxyRateLimitError | GatewayError:
    retry_after = max(refusal.retry_ms, 1) / 1000.0
    if check.limit_type == "budget":
        return budget_fit.budget_refusal(ctx, check, refusal)
    if check.limit_type == "max_iterations":
        message = f"Session iteration cap reached for {check.label}: {int(check.limit or 0)} calls per session."
    elif check.priority_tier:
        message = (
            f"Model '{ctx.model}' is saturated; requests at priority {ctx.key.priority} are paused. "
            f"Retry after {math.ceil(retry_after)} s."
        )
    else:
        unit = _UNITS.get(check.limit_type, check.limit_type)
        message = f"Rate limit exceeded for {check.label}: {int(check.limit or 0)} {unit}."
        if check.amount > (check.limit or 0) and check.kind != SLOTS:
            message += f" This request alone needs {check.amount}."
        message += f" Retry after {math.ceil(retry_after)} s."
    remaining = max(0.0, (check.limit or 0) - refusal.used)
    return ProxyRateLimitError(
        message,
        limit_type=check.limit_type,
        scope=check.scope,
        retry_after=retry_after,
        llm_provider=ctx.llm_provider,
        model=ctx.model,
        limit=check.limit,
        remaining=remaining,
        reset_seconds=retry_after,
    )


def _success_headers(ctx: RequestContext, checks: list[Check]) -> None:
    """x-ratelimit-* of the tightest request and token windows, as OpenAI sends them."""
    for kind in ("requests", "tokens"):
        tightest = None
        for check in checks:
            if check.limit_type != kind or check.limit is None or check.priority_tier or check.remaining is None:
                continue
            if tightest is None or check.remaining < tightest.remaining:
                tightest = check
        if tightest is None:
            continue
        ctx.response_headers[f"x-ratelimit-limit-{kind}"] = str(int(tightest.limit))
        ctx.response_headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(tightest.remaining)))
        ctx.response_headers[f"x-ratelimit-reset-{kind}"] = f"{(tightest.reset_ms or 0) / 1000:.3f}s"


def settlement_ops(plan: Plan, result: CallResult) -> list[tuple[Check, int]]:
    """What to give back: slots always; tokens and cost reconciled to what the call really used."""
    ops: list[tuple[Check, int]] = []
    keep = plan.keep_charges and result.status < 400
    for check in plan.checks:
        if check.check_only or check.reconcile is None or (keep and check.reconcile != "slot"):
            continue
        if check.reconcile == "slot":
            ops.append((check, 0))
        elif check.reconcile == "tokens":
            delta = result.total_tokens - check.amount
            if delta:
                ops.append((check, delta))
        elif check.reconcile == "cost" and check.kind == COUNTER:
            delta = usd_to_nano(result.cost) - check.amount
            if delta:
                ops.append((check, delta))
    return ops


SETTLE_RETRY_DELAYS = (1.0, 3.0, 10.0)
_retries: set[asyncio.Task] = set()


async def plan_settle(ctx: RequestContext, plan: Plan, result: CallResult, backend: CounterBackend) -> None:
    if not plan.committed or plan.settled or plan.skipped:
        return
    plan.settled = True
    ops = settlement_ops(plan, result)
    try:
        await backend.settle(ops)
    except BackendUnavailable as exc:
        _backend_failed("settle", exc)
        # A slot left behind would block a small max_parallel_requests until it expires (minutes):
        # release it again in the background (ZREM is idempotent). Token and cost deltas are not
        # retried: a timed-out call may have been applied, and keeping a reservation errs on the safe side.
        slots = [(check, delta) for check, delta in ops if check.reconcile == "slot"]
        if not slots:
            return
        task = asyncio.get_running_loop().create_task(_settle_later(slots, backend))
        _retries.add(task)
        task.add_done_callback(_retries.discard)


async def _settle_later(ops: list[tuple[Check, int]], backend: CounterBackend) -> None:
    for delay in SETTLE_RETRY_DELAYS:
        await asyncio.sleep(delay)
        try:
            await backend.settle(ops)
            return
        except BackendUnavailable as exc:
            _backend_failed("settle_retry", exc)
