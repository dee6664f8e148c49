"""Picks a deployment for each attempt, retries and falls back, and cools failing deployments down.

State here is per worker process (in-flight counts, latency averages, cooldowns): it steers this
worker's traffic and is what the admin's health page shows for it. Cooldowns alone are shared: with
Redis configured, a worker that cools a deployment down announces it once and every other worker
(on every machine) applies it too (``apps.proxy.cooldown_sync``), so they stop sending to it without
each failing on its own first. That costs nothing per request: announcing happens only when a
cooldown starts, off the request, and remote cooldowns land in the same ``Health.cooldown_until``
that ``pick`` already reads. Strategies:

- ``simple-shuffle``: random, weighted by ``weight``;
- ``least-busy``: fewest requests in flight from this worker;
- ``lowest-latency``: lowest moving average of time to response (untried deployments first);
- ``lowest-cost``: cheapest input+output price.

Within a group, deployments with a lower ``priority`` number are preferred; the rest are fallbacks.
Retryable failures (429, 5xx, timeouts, connection errors, upstream auth errors) move to the next
deployment, then to the group's fallback models; each attempt is recorded on the request context.

Failures and cooldowns are logged for the operator, but never one line per request: an upstream that
fails 3,000 times in a minute is one line per (deployment, status class) per interval with the count
(``apps.common.intervallog``), and each cooldown this worker starts one line per deployment per
interval. Cooldowns learned from another worker are that worker's to log (INFO here).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from apps.common.intervallog import IntervalLog
from apps.common.redis_target import RedisTarget, redis_target
from apps.proxy.context import RequestContext
from apps.proxy.cooldown_sync import CooldownSync
from apps.proxy.errors import GatewayError, UpstreamError
from apps.proxy.pricing import price_for
from apps.proxy.providers import Adapter, StreamReply
from apps.proxy.registry import Deployment, Group, Registry

logger = logging.getLogger(__name__)

MAX_COOLDOWN_SECONDS = 300.0  # longest Retry-After honoured
MAX_SHARED_COOLDOWN_SECONDS = 3600.0  # a garbled remote message never parks a deployment for long
EWMA_ALPHA = 0.2


@dataclass(slots=True)
class Health:
    in_flight: int = 0
    latency_ms: float | None = None
    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    cooldown_reason: str = ""
    successes: int = 0
    failures: int = 0
    last_error: str = ""

    def cooling(self, now: float) -> bool:
        return self.cooldown_until > now


@dataclass(slots=True)
class Attempt:
    deployment_id: int
    provider: str
    status: int
    error: str | None
    ms: float
    ttfb_ms: float | None = None  # until the upstream's response head (None: no head arrived)


def _ttfb(call: Any, started: float) -> float | None:
    """Milliseconds from an attempt's start to the upstream's response head, when one arrived."""
    responded_at = getattr(call, "responded_at", 0.0)
    return (responded_at - started) * 1000 if responded_at else None


class Router:
    def __init__(
        self,
        *,
        adapters: dict[str, Adapter],
        num_retries: int,
        timeout_seconds: float,
        cooldown_failures: int = 3,
        cooldown_seconds: float = 5.0,
        redis: RedisTarget | str | None = None,
        log_interval: float = 10.0,
    ) -> None:
        """``redis`` shares cooldowns between workers: None reads ``settings.REDIS_TARGET``, "" keeps them local.

        Built on the running loop (the gateway's startup), the cooldown listener starts here too.
        """
        self.adapters = adapters
        self.num_retries = num_retries
        self.timeout_seconds = timeout_seconds
        self.cooldown_failures = cooldown_failures
        self.cooldown_seconds = cooldown_seconds
        self.health: dict[int, Health] = {}
        self.events = IntervalLog(logger, interval=log_interval)
        target = settings.REDIS_TARGET if redis is None else redis_target(redis)
        self.cooldown_sync = CooldownSync(redis=target, apply=self.apply_shared_cooldown) if target else None
        if self.cooldown_sync is not None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                pass  # built outside a loop (tests, scripts): cooldowns stay local
            else:
                self.cooldown_sync.start()

    async def close(self) -> None:
        if self.cooldown_sync is not None:
            await self.cooldown_sync.stop()

    def _health(self, dep: Deployment) -> Health:
        health = self.health.get(dep.id)
        if health is None:
            health = self.health[dep.id] = Health()
        return health

    def _cool(self, dep: Deployment, health: Health, until: float, reason: str) -> None:
        """Cool down until ``until`` (monotonic) unless already cooling longer; tell the other workers."""
        if until > health.cooldown_until:
            health.cooldown_until = until
            health.cooldown_reason = reason
            self.events.event(
                f"cooldown:{dep.id}",
                f"deployment {dep.label} of '{dep.model_name}' cooling down for "
                f"{until - time.monotonic():.1f} s: {reason}",
            )
            if self.cooldown_sync is not None:
                self.cooldown_sync.announce(dep.id, until, reason)

    def apply_shared_cooldown(self, deployment_id: int, seconds: float, reason: str) -> float:
        """Another worker cooled this deployment down for ``seconds`` more; returns the local cooldown end."""
        health = self.health.get(deployment_id)
        if health is None:
            health = self.health[deployment_id] = Health()
        until = time.monotonic() + min(max(seconds, 0.0), MAX_SHARED_COOLDOWN_SECONDS)
        if until > health.cooldown_until:
            health.cooldown_until = until
            health.cooldown_reason = f"shared: {reason}" if reason else "shared"
            health.consecutive_failures = 0
            self.events.event(
                f"cooldown-shared:{deployment_id}",
                f"deployment {deployment_id} cooling down for {seconds:.1f} s as another worker announced: {reason}",
                level=logging.INFO,
            )
        return health.cooldown_until

    def candidates(self, group: Group, ctx: RequestContext, op: str) -> tuple[Deployment, ...]:
        memo_key = ("candidates", ctx.key.organization_id, ctx.key.is_master, op)
        found = group.memo.get(memo_key)
        if found is None:
            visible = group.visible_to(ctx.key.organization_id, is_master=ctx.key.is_master)
            found = tuple(d for d in visible if (a := self.adapters.get(d.provider)) is not None and a.supports(op))
            if len(group.memo) < 10_000:
                group.memo[memo_key] = found
        return found

    def pick(self, group: Group, deployments: tuple[Deployment, ...], tried: set[int]) -> Deployment | None:
        now = time.monotonic()
        healthy = [d for d in deployments if not self._health(d).cooling(now)]
        pool = [d for d in healthy if d.id not in tried] or healthy
        if not pool:
            return None
        best_priority = min(d.priority for d in pool)
        pool = [d for d in pool if d.priority == best_priority]
        if len(pool) == 1:
            return pool[0]
        strategy = group.strategy
        if strategy == "least-busy":
            low = min(self._health(d).in_flight for d in pool)
            return random.choice([d for d in pool if self._health(d).in_flight == low])  # noqa: S311
        if strategy == "lowest-latency":
            untried = [d for d in pool if self._health(d).latency_ms is None]
            if untried:
                return random.choice(untried)  # noqa: S311
            return min(pool, key=lambda d: self._health(d).latency_ms or 0.0)
        if strategy == "lowest-cost":
            return min(pool, key=lambda d: (price_for(d).input + price_for(d).output, d.id))
        weights = [d.weight for d in pool]
        if not any(weights):
            return random.choice(pool)  # noqa: S311
        return random.choices(pool, weights=weights)[0]  # noqa: S311

    def _failed(self, dep: Deployment, exc: UpstreamError) -> None:
        health = self._health(dep)
        health.failures += 1
        health.last_error = exc.kind
        self._log_failure(dep, exc)
        if not exc.retryable:
            return
        health.consecutive_failures += 1
        now = time.monotonic()
        if exc.status == 429 and exc.retry_after:
            self._cool(dep, health, now + min(exc.retry_after, MAX_COOLDOWN_SECONDS), "429 retry-after")
        elif exc.status == 429 or health.consecutive_failures >= int(
            dep.extra.get("cooldown_failures", self.cooldown_failures)
        ):
            seconds = float(dep.extra.get("cooldown_seconds", self.cooldown_seconds))
            reason = "429" if exc.status == 429 else f"{health.consecutive_failures} failures ({exc.kind})"
            self._cool(dep, health, now + seconds, reason)
            health.consecutive_failures = 0

    def _log_failure(self, dep: Deployment, exc: UpstreamError) -> None:
        """One line per (deployment, status class) per interval, with the count and the latest detail.

        The detail is ``operator_detail``: the upstream's text with credentials, account ids and
        addresses scrubbed (what the admin shows), never a client's prompt or a key.
        """
        if exc.upstream_status:
            status_class = f"{exc.upstream_status // 100}xx"
            outcome = f"answered HTTP {exc.upstream_status} ({exc.kind})"
        else:  # no HTTP answer: a timeout, a refused or broken connection, an unreadable body
            status_class = exc.kind
            outcome = f"failed ({exc.kind})"
        detail = " ".join(exc.operator_detail.split())[:200]
        self.events.event(
            f"upstream:{dep.id}:{status_class}",
            f"upstream failure: deployment {dep.label} of '{dep.model_name}' {outcome}: {detail}",
        )

    def _succeeded(self, dep: Deployment, ms: float) -> None:
        health = self._health(dep)
        health.successes += 1
        health.consecutive_failures = 0
        health.latency_ms = (
            ms if health.latency_ms is None else health.latency_ms + EWMA_ALPHA * (ms - health.latency_ms)
        )

    async def call(
        self,
        *,
        session: Any,
        ctx: RequestContext,
        registry: Registry,
        group: Group,
        op: str,
        first: Deployment | None,
        make_call: Callable[[Deployment, Adapter], Any],
        attempts: list[Attempt],
    ) -> tuple[Any, Deployment, Any]:
        """Run attempts until one succeeds; returns (reply, deployment, call). Raises the last failure."""
        groups = [group]
        for name in group.fallbacks:
            # Within the key's organization, like the name the client asked for.
            fallback = registry.resolve(name, ctx.key.organization_id, is_master=ctx.key.is_master)
            # A key limited to some models is never served by a fallback model it may not use.
            if fallback is not None and fallback not in groups and ctx.key.allows_model(fallback.model_name):
                groups.append(fallback)
        last_error: UpstreamError | None = None
        trace = ctx.trace
        for current in groups:
            if trace is not None and current is not group:
                trace.event(
                    "gateway.fallback",
                    {"gateway.fallback.from": group.model_name, "gateway.fallback.to": current.model_name},
                )
            deployments = self.candidates(current, ctx, op)
            tried: set[int] = set()
            retries = current.num_retries if current.num_retries is not None else self.num_retries
            for _ in range(retries + 1):
                dep = first if first is not None and first in deployments else self.pick(current, deployments, tried)
                first = None
                if dep is None:
                    break
                tried.add(dep.id)
                ctx.deployment_id, ctx.llm_provider = dep.id, dep.provider
                adapter = self.adapters[dep.provider]
                call = make_call(dep, adapter)
                span = None
                if trace is not None:  # this attempt's CLIENT span; the upstream continues the trace from it
                    span = trace.attempt(dep, op)
                    call.traceparent, call.tracestate = span.traceparent, trace.tracestate
                health = self._health(dep)
                health.in_flight += 1
                started = time.perf_counter()
                try:
                    reply = await adapter.send(session, dep, call, dep.timeout_seconds or self.timeout_seconds)
                except UpstreamError as exc:
                    health.in_flight -= 1
                    ms = (time.perf_counter() - started) * 1000
                    if exc.upstream_status == 404:
                        # The registry knows this model, so the upstream not knowing it is this deployment's
                        # configuration (model id, path): fail over, and cool it down if it keeps happening.
                        exc.retryable = True
                    attempts.append(Attempt(dep.id, dep.provider, exc.status, exc.kind, ms, _ttfb(call, started)))
                    self._failed(dep, exc)
                    last_error = exc
                    if span is not None:
                        span.end(exc.upstream_status or exc.status, exc.kind)
                        if exc.retryable:
                            trace.event(
                                "gateway.retry",
                                {
                                    "gateway.deployment.id": dep.id,
                                    "error.type": exc.kind,
                                    "http.response.status_code": exc.status,
                                },
                            )
                    if not exc.retryable:
                        raise
                    continue
                except BaseException as exc:
                    health.in_flight -= 1
                    if span is not None:
                        span.end(getattr(exc, "status", 502), getattr(exc, "kind", type(exc).__name__))
                    raise
                if span is not None:
                    span.end(getattr(reply, "status", 200))
                ms = (time.perf_counter() - started) * 1000
                attempts.append(Attempt(dep.id, dep.provider, 200, None, ms, _ttfb(call, started)))
                self._succeeded(dep, ms)
                if isinstance(reply, StreamReply):
                    reply.on_close.append(lambda h=health: setattr(h, "in_flight", h.in_flight - 1))
                else:
                    health.in_flight -= 1
                return reply, dep, call
        if last_error is not None:
            raise last_error
        retry_after = self._soonest_recovery(group)
        raise GatewayError(
            503,
            f"No deployment of '{group.model_name}' is available right now.",
            code="no_healthy_deployment",
            llm_provider=ctx.llm_provider,
            headers={"retry-after": str(retry_after)},
            kind="no_healthy_deployment",
        )

    def _soonest_recovery(self, group: Group) -> int:
        now = time.monotonic()
        waits = [self._health(d).cooldown_until - now for d in group.deployments]
        waits = [w for w in waits if w > 0]
        return max(1, int(min(waits) + 0.999)) if waits else 1

    def snapshot(self) -> dict[int, dict[str, Any]]:
        """Per-deployment health of this worker, for the admin's deployment pages."""
        now = time.monotonic()
        return {
            dep_id: {
                "in_flight": h.in_flight,
                "latency_ms": round(h.latency_ms, 2) if h.latency_ms is not None else None,
                "cooling_down_seconds": round(max(0.0, h.cooldown_until - now), 1),
                "cooldown_reason": h.cooldown_reason if h.cooldown_until > now else "",
                "successes": h.successes,
                "failures": h.failures,
                "last_error": h.last_error,
            }
            for dep_id, h in self.health.items()
        }
