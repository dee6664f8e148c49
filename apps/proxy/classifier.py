"""The classifier the guardrails call (moderation, prompt injection): a model call through this gateway's router.

The guardrails live below the proxy and never import its router; the gateway hands them this callable
when it builds their chain (``apps.guardrails.base.Classifier``). The classifier's name resolves in the
calling key's organization like any model the key names (its private deployments first, then shared
ones), and the call runs through the same router: retries, failover, cooldowns, the pooled client. It is
not charged to the key's limits or budgets, and it is not a row of the ledger of its own: the request's
row records the guardrail's outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from apps.proxy.calls import reply_object
from apps.proxy.context import RequestContext
from apps.proxy.errors import GatewayError, model_not_found
from apps.proxy.providers import Call, StreamReply
from apps.proxy.router import Attempt

if TYPE_CHECKING:
    from apps.proxy.calls import ProxyGateway


class GatewayClassifier:
    def __init__(self, gw: ProxyGateway) -> None:
        self.gw = gw

    async def __call__(self, ctx: RequestContext, model: str, op: str, body: dict[str, Any]) -> dict[str, Any]:
        gw = self.gw
        org, is_master = ctx.key.organization_id, ctx.key.is_master
        registry = await gw.get_registry()
        group = registry.resolve(model, org, is_master=is_master)
        if group is None or not group.visible_to(org, is_master=is_master):
            raise model_not_found(model)
        # Its own context: the router records the deployment it used on it, and the request's must stay the
        # request's (its ledger row, its limiter keys).
        shadow = RequestContext(request_id=ctx.request_id, key=ctx.key, route=f"guardrail:{op}", model=model)
        deployments = gw.router.candidates(group, shadow, op)
        if not deployments and not group.fallbacks:
            raise GatewayError(400, f"The classifier model '{model}' does not support {op}.", kind="bad_request")
        first = gw.router.pick(group, deployments, set()) if deployments else None
        attempts: list[Attempt] = []
        reply, dep, _call = await gw.router.call(
            session=gw.session,
            ctx=shadow,
            registry=registry,
            group=group,
            op=op,
            first=first,
            make_call=lambda _dep, _adapter: Call(op, body),
            attempts=attempts,
        )
        if isinstance(reply, StreamReply):  # never asked for; an upstream that streams anyway is unusable
            await reply.aclose()
            raise GatewayError(502, "The classifier answered with a stream.", kind="upstream_bad_response")
        return reply_object(reply, dep.provider)
