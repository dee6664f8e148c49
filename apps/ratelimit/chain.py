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

from django.conf import settings
from django.utils.module_loading import import_string

from apps.proxy.context import CallResult, RequestContext
from apps.ratelimit.backends import CounterBackend
from apps.ratelimit.backends.factory import backend_from_settings
from apps.ratelimit.engine import plan_reserve, plan_settle
from apps.ratelimit.errors import LimiterUnavailableError, ProxyRateLimitError
from apps.ratelimit.lookups import CustomerLimits
from apps.ratelimit.scopes import customer_scope
from apps.ratelimit.state import limiter_state


class ProxyMiddleware:
    """Base class: override either hook. Raise ``ProxyRateLimitError`` from ``pre_call`` to refuse."""

    async def pre_call(self, ctx: RequestContext) -> None:
        return None

    async def post_call(self, ctx: RequestContext, result: CallResult) -> None:
        return None


class MiddlewareChain:
    """Owns what the limiters share for its lifetime (the gateway's): the counter backend and the
    end-user lookups. Nothing of it lives in module globals."""

    def __init__(
        self,
        middleware: list[ProxyMiddleware],
        backend: CounterBackend | None = None,
        customers: CustomerLimits | None = None,
    ) -> None:
        self.middleware = middleware
        self.customers = CustomerLimits() if customers is None else customers
        # None: the one settings ask for (Redis when REDIS_TARGET is set, else memory), built on first use
        # (a chain that never counts anything never connects) and owned by this chain from then on.
        self._backend = backend

    @property
    def backend(self) -> CounterBackend:
        if self._backend is None:
            self._backend = backend_from_settings()
        return self._backend

    def invalidate(self) -> None:
        """Something changed in the admin (the proxy's cache invalidation): reload customers before their next use.

        Deployment and group capacity need nothing here: they arrive with the proxy's reloaded registry.
        """
        self.customers.expire()

    async def close(self) -> None:
        """Close the backend's connections (the gateway's shutdown)."""
        if self._backend is not None:
            await self._backend.close()

    async def pre_call(self, ctx: RequestContext) -> None:
        state = limiter_state(ctx)
        state.customers = self.customers
        passed = state.passed
        try:
            for mw in self.middleware:
                await mw.pre_call(ctx)
                passed.append(mw)
            # Access, not a limit: a blocked end user is refused (403) whichever limiters are configured.
            # After the loop, so every middleware's post_call (metrics) still sees the refusal.
            if ctx.customer_id:
                await customer_scope(ctx)
            plan = state.plan
            if plan is not None:
                if plan.checks:
                    await plan_reserve(ctx, plan, self.backend)
                else:
                    plan.committed = True  # nothing to count (no limit applies): no backend call at all
        except (ProxyRateLimitError, LimiterUnavailableError) as exc:
            exc.tag(llm_provider=ctx.llm_provider, model=ctx.model)
            state.refusal = exc
            raise

    async def post_call(self, ctx: RequestContext, result: CallResult) -> None:
        state = limiter_state(ctx)
        try:
            for mw in reversed(state.passed):
                await mw.post_call(ctx, result)
        finally:
            plan = state.plan
            if plan is not None and plan.checks:
                await plan_settle(ctx, plan, result, self.backend)


def build_chain(
    paths: list[str] | None = None, backend: CounterBackend | None = None, customers: CustomerLimits | None = None
) -> MiddlewareChain:
    """The chain of ``paths`` (default ``settings.PROXY_MIDDLEWARE``, import strings like Django's MIDDLEWARE)
    on ``backend`` (default: built from settings on first use) with ``customers`` (default: its own lookups)."""
    names = settings.PROXY_MIDDLEWARE if paths is None else paths
    return MiddlewareChain([import_string(name)() for name in names], backend=backend, customers=customers)
