"""What every /v1 flow shares, below the modules that answer the routes.

The endpoint modules (``endpoints``, ``count_tokens``, ``batches``, ``listing``, ``limited``) import
from here and never from each other's insides: the gateway as a flow sees it (``ProxyGateway``, whose
one implementation is ``apps.proxy.app.Gateway``), the model a request names and the group it resolves
to, an upstream answer read as a JSON object, and the spend event a call ends as.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson

from apps.guardrails.base import outcomes_of
from apps.proxy.context import CallResult, RequestContext
from apps.proxy.errors import GatewayError, bad_request, model_not_allowed, model_not_found
from apps.proxy.providers.base import malformed
from apps.spend.events import SpendEvent

if TYPE_CHECKING:
    import aiohttp

    from apps.guardrails.base import GuardrailChain
    from apps.proxy.auth import AuthCache
    from apps.proxy.cache_sync import CacheSync
    from apps.proxy.overload import LoadShedder
    from apps.proxy.providers.base import Adapter
    from apps.proxy.registry import Deployment, Group, Registry
    from apps.proxy.response_cache.flow import ResponseCache
    from apps.proxy.router import Attempt, Router
    from apps.proxy.tracing import Tracing

T = TypeVar("T")
MAX_MODEL_NAME = 200  # ModelDeployment.model_name / ModelAlias.alias


class LimiterChain(Protocol):
    """The limiter chain as the proxy calls it (``apps.ratelimit.chain``, loaded from settings)."""

    async def pre_call(self, ctx: RequestContext) -> None: ...

    async def post_call(self, ctx: RequestContext, result: CallResult) -> None: ...


class ProxyGateway(Protocol):
    """The per-process gateway as the /v1 flows use it: shared state, the answers' common parts, and
    ``finish``, the one end of every authenticated request."""

    openapi: bytes | None
    secret: str
    max_body: int
    settings_timeout: float
    session: aiohttp.ClientSession | None
    adapters: dict[str, Adapter]
    router: Router
    auth: AuthCache
    chain: LimiterChain
    guardrails: GuardrailChain
    shedder: LoadShedder
    cache_sync: CacheSync
    response_cache: ResponseCache
    tracing: Tracing | None

    async def get_registry(self, *, unknown_model: bool = False) -> Registry: ...

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T: ...

    def common_headers(
        self, request_id: str, started: float, upstream_ms: float = 0.0, deployment: str = "none", cost: str = "0"
    ) -> list[tuple[bytes, bytes]]: ...

    async def send_error(
        self,
        send: Any,
        exc: GatewayError,
        request_id: str,
        started: float,
        ctx: RequestContext | None = None,
        upstream_ms: float = 0.0,
        deployment: str = "none",
    ) -> None: ...

    async def finish(
        self, ctx: RequestContext, result: CallResult, *, pre_called: bool, event: SpendEvent | None
    ) -> None: ...


def requested_model(ctx: RequestContext, model: object) -> str:
    """The body's model name, set on ``ctx``: 400 when missing, 404 when longer than any public name."""
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required.", param="model")
    if len(model) > MAX_MODEL_NAME:  # no public name or alias is longer: nothing to look up, echo or log
        ctx.model = model[:MAX_MODEL_NAME]
        raise model_not_found(ctx.model)
    ctx.model = model
    return model


async def resolve(
    gw: ProxyGateway, ctx: RequestContext, op: str, model: str
) -> tuple[Registry, Group, tuple[Deployment, ...], str]:
    """The group ``model`` means for this key's organization (``Registry.resolve``), else 404.

    A name only another organization can see is unknown here, checked before the allow-list: the
    same 404 as a name that never existed (a 403 would tell that some tenant has it).
    """
    org, is_master = ctx.key.organization_id, ctx.key.is_master
    registry = await gw.get_registry()
    group = registry.resolve(model, org, is_master=is_master)
    if group is None:
        registry = await gw.get_registry(unknown_model=True)
        group = registry.resolve(model, org, is_master=is_master)
    if group is None or not group.visible_to(org, is_master=is_master):
        raise model_not_found(model)
    ctx.model_known = True
    if not (ctx.key.allows_model(model) or ctx.key.allows_model(group.model_name)):
        raise model_not_allowed(model)
    ctx.group = group  # whose capacity the priority limiter guards (when it is a shared group)
    support_op = "chat" if op == "messages" else op
    deployments = gw.router.candidates(group, ctx, support_op)
    if not deployments and not group.fallbacks:
        raise bad_request(f"The model '{model}' does not support {ctx.route}.", param="model", code="unsupported_route")
    return registry, group, deployments, support_op


def reply_object(reply: Any, provider: str) -> dict[str, Any]:
    """The upstream's answer as a JSON object (a copy); anything else is the upstream's fault (502)."""
    obj = reply.obj
    if obj is None:
        try:
            obj = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            obj = None
    if not isinstance(obj, dict):
        raise malformed(provider)
    return dict(obj)


def spend_event(
    ctx: RequestContext, result: CallResult, attempts: list[Attempt], limit_type: str | None = None
) -> SpendEvent:
    metadata: dict[str, Any] = {}
    last = attempts[-1] if attempts else None
    if result.limit_scope:
        metadata["limit_scope"] = result.limit_scope  # which level refused, for the request explorer
    if len(attempts) > 1:
        metadata["attempts"] = [
            {
                "deployment_id": a.deployment_id,
                "provider": a.provider,
                "status": a.status,
                "error": a.error,
                "ms": round(a.ms, 1),
            }
            for a in attempts
        ]
    return SpendEvent(
        request_id=ctx.request_id,
        created_at=time.time(),
        route=ctx.route,
        status=result.status,
        model=ctx.model,
        llm_provider=ctx.llm_provider,
        deployment_id=ctx.deployment_id,
        organization_id=ctx.key.organization_id,
        team_id=ctx.key.team_id,
        key_id=ctx.key.key_id,
        key_alias=ctx.key.key_alias,
        user_id=ctx.key.user_id,
        customer_id=ctx.customer_id,
        session_id=ctx.session_id,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        cached_tokens=result.cached_tokens,
        cost=str(result.cost),
        latency_ms=round(result.latency_ms, 3),
        ttft_ms=round(result.ttft_ms, 3) if result.ttft_ms is not None else None,
        overhead_ms=round(max(0.0, result.overhead_ms), 3) if result.overhead_ms is not None else None,
        upstream_ttfb_ms=round(last.ttfb_ms, 3) if last is not None and last.ttfb_ms is not None else None,
        retries=max(0, len(attempts) - 1),
        error_type=result.error_type,
        limit_type=limit_type,
        metadata=metadata,
        trace_id=ctx.trace_id,
        cache_hit=result.cache_hit,
        cost_saved=str(result.cost_saved),
        guardrails=outcomes_of(ctx),
    )
