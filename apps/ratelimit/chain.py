"""Loads the limiter middleware chain named in ``settings.PROXY_MIDDLEWARE`` (like Django's MIDDLEWARE).

The proxy calls ``chain.pre_call(ctx)`` before routing and ``chain.post_call(ctx, result)`` exactly once
afterwards, whatever happened (success, upstream error, timeout, client disconnect, refusal).
``pre_call`` runs in list order; when one raises, ``post_call`` runs only for the middleware that
already passed, in reverse order, so nothing reserved is leaked.
"""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string

from apps.proxy.context import CallResult, RequestContext


class ProxyMiddleware:
    """Base class: override either hook. Raise ``ProxyRateLimitError`` from ``pre_call`` to refuse."""

    async def pre_call(self, ctx: RequestContext) -> None:
        return None

    async def post_call(self, ctx: RequestContext, result: CallResult) -> None:
        return None


class MiddlewareChain:
    def __init__(self, middleware: list[ProxyMiddleware]) -> None:
        self.middleware = middleware

    async def pre_call(self, ctx: RequestContext) -> None:
        passed: list[ProxyMiddleware] = []
        ctx.reservations["_passed"] = passed
        for mw in self.middleware:
            await mw.pre_call(ctx)
            passed.append(mw)

    async def post_call(self, ctx: RequestContext, result: CallResult) -> None:
        passed = ctx.reservations.get("_passed", [])
        for mw in reversed(passed):
            await mw.post_call(ctx, result)


def build_chain(paths: list[str] | None = None) -> MiddlewareChain:
    names = settings.PROXY_MIDDLEWARE if paths is None else paths
    return MiddlewareChain([import_string(name)() for name in names])
