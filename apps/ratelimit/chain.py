"""Loads the limiter middleware chain named in ``settings.PROXY_MIDDLEWARE`` (like Django's MIDDLEWARE).

The proxy calls ``chain.pre_call(ctx)`` before routing and ``chain.post_call(ctx, result)`` exactly once
afterwards, whatever happened (success, upstream error, timeout, client disconnect, refusal).
``pre_call`` runs in list order; when one raises, ``post_call`` runs only for the middleware that
already passed, in reverse order, so nothing reserved is leaked.

Limiters add checks to the request's plan; once every ``pre_call`` has run, the chain reserves the whole
plan in one atomic backend call (all-or-nothing), and after every ``post_call`` it settles the plan in
one call (slots released, tokens and cost reconciled). Before reserving, the chain refuses an end user
the organization blocked (``CustomerBlockedError``, 403), whichever limiters are configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.utils.module_loading import import_string

from apps.proxy.context import CallResult, RequestContext
from apps.ratelimit.errors import LimiterUnavailableError, ProxyRateLimitError
from apps.ratelimit.plan import PLAN_KEY, REFUSAL_KEY

if TYPE_CHECKING:
    from apps.ratelimit.backends import CounterBackend


class ProxyMiddleware:
    """Base class: override either hook. Raise ``ProxyRateLimitError`` from ``pre_call`` to refuse."""

    async def pre_call(self, ctx: RequestContext) -> None:
        return None

    async def post_call(self, ctx: RequestContext, result: CallResult) -> None:
        return None


class MiddlewareChain:
    def __init__(self, middleware: list[ProxyMiddleware], backend: CounterBackend | None = None) -> None:
        self.middleware = middleware
        # None: the process backend (Redis when REDIS_URL is set, else memory), resolved on first use.
        self._backend = backend

    @property
    def backend(self) -> CounterBackend:
        if self._backend is not None:
            return self._backend
        from apps.ratelimit.backends import get_backend

        return get_backend()

    async def pre_call(self, ctx: RequestContext) -> None:
        engine, middleware = _hot_modules()
        passed: list[ProxyMiddleware] = []
        ctx.reservations["_passed"] = passed
        try:
            for mw in self.middleware:
                await mw.pre_call(ctx)
                passed.append(mw)
            # Access, not a limit: a blocked end user is refused (403) whichever limiters are configured.
            # After the loop, so every middleware's post_call (metrics) still sees the refusal.
            if ctx.customer_id:
                await middleware.customer_scope(ctx)
            plan = ctx.reservations.get(PLAN_KEY)
            if plan is not None:
                if plan.checks:
                    await engine.plan_reserve(ctx, plan, self.backend)
                else:
                    plan.committed = True  # nothing to count (no limit applies): no backend call at all
        except (ProxyRateLimitError, LimiterUnavailableError) as exc:
            exc.tag(llm_provider=ctx.llm_provider, model=ctx.model)
            ctx.reservations[REFUSAL_KEY] = exc
            raise

    async def post_call(self, ctx: RequestContext, result: CallResult) -> None:
        passed = ctx.reservations.get("_passed", ())
        try:
            for mw in reversed(passed):
                await mw.post_call(ctx, result)
        finally:
            plan = ctx.reservations.get(PLAN_KEY)
            if plan is not None and plan.checks:
                await _hot_modules()[0].plan_settle(ctx, plan, result, self.backend)


_modules: tuple = ()


def _hot_modules():
    """(engine, middleware), imported on first use: both import this module, so not at import time."""
    global _modules
    if not _modules:
        from apps.ratelimit import engine, middleware

        _modules = (engine, middleware)
    return _modules


def build_chain(paths: list[str] | None = None, backend: CounterBackend | None = None) -> MiddlewareChain:
    """The chain of ``paths`` (default ``settings.PROXY_MIDDLEWARE``) on ``backend`` (default: the process's)."""
    names = settings.PROXY_MIDDLEWARE if paths is None else paths
    return MiddlewareChain([import_string(name)() for name in names], backend=backend)
