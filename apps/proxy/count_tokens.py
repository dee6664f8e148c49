"""``POST /v1/messages/count_tokens`` (the anthropic SDK's ``client.messages.count_tokens``).

An Anthropic deployment counts for itself (its upstream's count_tokens endpoint, with the deployment's
model). Any other deployment gets the gateway's own estimate of the translated chat request: the number
the limiters and budgets reserve for that request. Nothing runs on a model and nothing is charged;
the upstream count passes the key's limiters as one request (no tokens, no cost).
"""

from __future__ import annotations

from apps.proxy.asgi_io import parse_json_object, send_json
from apps.proxy.calls import ProxyGateway, requested_model, resolve
from apps.proxy.context import RequestContext
from apps.proxy.errors import bad_request
from apps.proxy.limited import run_limited
from apps.proxy.providers import Call
from apps.proxy.providers.anthropic_reverse import messages_to_chat_request
from apps.proxy.providers.base import SHAPE_ERRORS, malformed
from apps.proxy.tokens import estimate_prompt_tokens, reject_client_upstream

NATIVE_PROVIDERS = frozenset({"anthropic"})


async def count_tokens(gw: ProxyGateway, ctx: RequestContext, raw: bytes, headers: dict[bytes, bytes], send) -> None:
    body = parse_json_object(raw)
    reject_client_upstream(raw, body)
    model = requested_model(ctx, body.get("model"))
    if not isinstance(body.get("messages"), list):
        raise bad_request("'messages' must be a list.", param="messages")
    _registry, group, deployments, _ = await resolve(gw, ctx, "messages", model)
    dep = gw.router.pick(group, deployments, set()) if deployments else None
    if dep is not None and dep.provider in NATIVE_PROVIDERS:
        # A call on the shared upstream's quota: it passes the key's limiters like any request (counted
        # as one request, no tokens, no cost) and lands in the ledger at cost 0.
        ctx.deployment, ctx.llm_provider, ctx.deployment_id = dep, dep.provider, dep.id
        beta = headers.get(b"anthropic-beta")
        call = Call(
            "messages_count_tokens",
            body,
            anthropic_beta=beta.decode("latin-1") if beta and beta.isascii() else None,
        )

        async def relay() -> None:
            timeout = dep.timeout_seconds or gw.settings_timeout
            reply = await gw.adapters[dep.provider].send(gw.session, dep, call, timeout)
            obj = reply.obj
            if not isinstance(obj, dict) or not isinstance(obj.get("input_tokens"), int):
                raise malformed(dep.provider)
            headers_out = gw.common_headers(ctx.request_id, ctx.started_at, deployment=dep.label)
            await send_json(send, 200, {"input_tokens": obj["input_tokens"]}, headers_out)

        await run_limited(gw, ctx, dep, send, relay)
        return
    try:
        chat_body = messages_to_chat_request(body)
    except SHAPE_ERRORS as exc:
        raise bad_request(f"The request body has an unexpected shape ({type(exc).__name__}).") from None
    answer = {"input_tokens": estimate_prompt_tokens(chat_body)}
    label = dep.label if dep is not None else "none"
    await send_json(send, 200, answer, gw.common_headers(ctx.request_id, ctx.started_at, deployment=label))
