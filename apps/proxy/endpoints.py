"""The request flows behind each /v1 route (model calls, model listing; files and batches in ``batches.py``)."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson

from apps.proxy import batches, listing
from apps.proxy.asgi_io import encode_headers, header_map, parse_json_object, read_body, send_json, send_response
from apps.proxy.auth import bearer_token
from apps.proxy.calls import ProxyGateway, requested_model, resolve, spend_event
from apps.proxy.context import CallResult, RequestContext
from apps.proxy.count_tokens import count_tokens
from apps.proxy.errors import GatewayError, bad_request, model_not_found
from apps.proxy.limited import send_rate_limited
from apps.proxy.multipart import form_fields, parse_multipart
from apps.proxy.pricing import call_cost, format_cost, price_for, token_cost
from apps.proxy.providers import Call, StreamReply
from apps.proxy.providers.anthropic_reverse import chat_to_messages_response, messages_to_chat_request
from apps.proxy.providers.base import SHAPE_ERRORS, Reply, Usage, malformed
from apps.proxy.registry import Deployment
from apps.proxy.relay import ChatEncoder, MessagesEncoder, NativeEncoder, relay_stream
from apps.proxy.response_cache.flow import CACHE_DEPLOYMENT
from apps.proxy.router import Attempt
from apps.proxy.tokens import (
    estimate_prompt_tokens,
    estimate_text_tokens,
    reject_client_upstream,
    reject_client_upstream_form,
    requested_max_tokens,
)
from apps.proxy.trace_points import failure_of, trace_reply
from apps.ratelimit import observe
from apps.ratelimit.errors import ProxyRateLimitError

if TYPE_CHECKING:
    from apps.proxy.response_cache.flow import CachePlan
    from apps.proxy.tracing import RequestTrace

MAX_CUSTOMER_ID = 255  # SpendLog.customer_id
STREAM_OPS = frozenset({"chat", "completions", "responses", "messages"})
GENERATIVE_OPS = STREAM_OPS
FORM_OPS = frozenset({"audio_transcriptions", "files_create"})
ROUTE_OF = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
    "responses": "/v1/responses",
    "images": "/v1/images/generations",
    "audio_speech": "/v1/audio/speech",
    "audio_transcriptions": "/v1/audio/transcriptions",
    "moderations": "/v1/moderations",
    "rerank": "/v1/rerank",
    "messages": "/v1/messages",
    "files_create": "/v1/files",
    "batches_create": "/v1/batches",
    "files_list": "/v1/files",
    "batches_list": "/v1/batches",
    "messages_count_tokens": "/v1/messages/count_tokens",
    "models": "/v1/models",
    "openapi": "/v1/openapi.json",
    # Routes with an id: the template, so metrics never carry a client-chosen path.
    "models_get": "/v1/models/{model}",
    "files_get": "/v1/files/{file_id}",
    "files_content": "/v1/files/{file_id}/content",
    "files_delete": "/v1/files/{file_id}",
    "batches_get": "/v1/batches/{batch_id}",
    "batches_cancel": "/v1/batches/{batch_id}/cancel",
}
UNKNOWN_ROUTE = "unknown"
# Lists answered from what the gateway recorded per organization (apps/proxy/listing.py).
LISTING_OPS = {"files_list": listing.files_list, "batches_list": listing.batches_list}
REQUIRED = {
    "chat": ("messages", list),
    "messages": ("messages", list),
    "completions": ("prompt", (str, list)),
    "embeddings": ("input", (str, list)),
    "images": ("prompt", str),
    "audio_speech": ("input", str),
    "rerank": ("documents", list),
    "responses": ("input", (str, list)),
}


async def handle(
    gw: ProxyGateway, op: str, args: tuple[str, ...], scope, receive, send, *, request_id: str, started: float
) -> None:
    if op == "openapi":  # public: the description of this surface
        if gw.openapi is None:
            from apps.proxy.openapi import openapi_json  # django-ninja and pydantic: built once, off the hot path

            gw.openapi = openapi_json()
        await send_response(send, 200, gw.openapi, gw.common_headers(request_id, started))
        observe.request_unauthenticated(ROUTE_OF[op], 200, None, started)
        return
    headers = header_map(scope)
    if gw.tracing is None:
        await authenticated(gw, op, args, headers, scope, receive, send, request_id=request_id, started=started)
        return
    trace = gw.tracing.request(op, scope["method"], headers)
    try:
        await authenticated(
            gw, op, args, headers, scope, receive, send, request_id=request_id, started=started, trace=trace
        )
    except BaseException as exc:  # answered above us (401, a shed 503, a bug's 502) or the client left
        trace.failed(*failure_of(exc))
        raise
    finally:
        trace.end()


async def authenticated(
    gw: ProxyGateway,
    op: str,
    args: tuple[str, ...],
    headers: dict[bytes, bytes],
    scope,
    receive,
    send,
    *,
    request_id: str,
    started: float,
    trace: RequestTrace | None = None,
) -> None:
    """Authenticate (after the overload check), then run the route's flow; answers its own errors."""
    gw.cache_sync.check_local()
    token = bearer_token(headers)
    lag = gw.shedder.lag_past_threshold()
    if lag is not None:  # overloaded: shed by the key's priority before any lookup, body read or upstream work
        gw.shedder.admit(lag, gw.auth.known(token))
    key = await gw.auth.authenticate(token, scope.get("client"), headers.get(b"x-forwarded-for"))
    ctx = RequestContext(request_id=request_id, key=key, route=ROUTE_OF.get(op, UNKNOWN_ROUTE), started_at=started)
    if trace is not None:
        trace.ctx, ctx.trace = ctx, trace
        if trace.recording:
            ctx.trace_id = trace.trace_id_hex  # into the spend event: the ledger row links to the trace
    try:
        await dispatch(gw, ctx, op, args, headers, scope, receive, send)
    except GatewayError as exc:
        await gw.send_error(send, exc, request_id, started)
        observe.request_unmetered(ctx, CallResult(status=exc.status, error_type=exc.kind))
        if trace is not None:
            trace.failed(exc.status, exc.kind)
        return
    # Every success the chain did not see is a 200 (listings, lookups, the gateway's own token count).
    observe.request_unmetered(ctx, CallResult(status=200))


async def dispatch(gw: ProxyGateway, ctx: RequestContext, op: str, args, headers, scope, receive, send) -> None:
    """The flow behind ``op`` for an authenticated request; a ``GatewayError`` is the caller's to answer."""
    if op in ("models", "models_get"):
        await list_models(gw, ctx, send, args)
        return
    if op in batches.PASSTHROUGH_OPS:
        await batches.passthrough(gw, ctx, op, args, send)
        return
    if op == "files_delete":
        await listing.file_delete(gw, ctx, args[0], send)
        return
    if op in LISTING_OPS:
        await LISTING_OPS[op](gw, ctx, scope, send)
        return
    raw = await read_body(receive, headers, gw.max_body)
    if op == "messages_count_tokens":
        await count_tokens(gw, ctx, raw, headers, send)
    elif op == "files_create":
        await batches.file_create(gw, ctx, raw, headers, send)
    elif op == "batches_create":
        await batches.batch_create(gw, ctx, raw, send)
    else:
        await model_call(gw, ctx, op, raw, headers, scope, receive, send)


async def list_models(gw: ProxyGateway, ctx: RequestContext, send, args: tuple[str, ...]) -> None:
    registry = await gw.get_registry()
    org, is_master = ctx.key.organization_id, ctx.key.is_master
    data = []
    for name in registry.public_names(org, is_master=is_master):
        group = registry.resolve(name, org, is_master=is_master)
        if group is None or (not ctx.key.allows_model(name) and not ctx.key.allows_model(group.model_name)):
            continue
        visible = group.visible_to(org, is_master=is_master)
        if visible:
            data.append({"id": name, "object": "model", "created": 0, "owned_by": visible[0].provider})
    headers = gw.common_headers(ctx.request_id, ctx.started_at)
    if args:
        found = next((m for m in data if m["id"] == args[0]), None)
        if found is None:
            raise model_not_found(args[0])
        await send_json(send, 200, found, headers)
        return
    await send_json(send, 200, {"object": "list", "data": data}, headers)


def parse_request(op: str, raw: bytes, headers: dict[bytes, bytes]) -> tuple[dict[str, Any], list | None]:
    if op in FORM_OPS:
        parts = parse_multipart(headers.get(b"content-type", b""), raw)
        reject_client_upstream_form(part[0] for part in parts)
        body: dict[str, Any] = dict(form_fields(parts))
        if body.get("stream") in ("true", "True", "1"):
            body["stream"] = True
        return body, parts
    body = parse_json_object(raw)
    reject_client_upstream(raw, body)
    stream = body.get("stream")
    if stream is not None and stream is not True and stream is not False:
        # A truthy non-boolean ("true", 1) is relayed as is: servers that coerce it (vLLM, Ollama) would stream
        # into a body the gateway buffers whole, without the usage chunk it asks for on real streams.
        raise bad_request("'stream' must be a boolean.", param="stream")
    required = REQUIRED.get(op)
    if required and not isinstance(body.get(required[0]), required[1]):
        raise bad_request(f"'{required[0]}' is required.", param=required[0])
    if required and required[1] is list and not body[required[0]]:
        raise bad_request(f"'{required[0]}' must not be empty.", param=required[0])
    if op in ("chat", "messages"):
        for message in body["messages"]:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise bad_request("Each message must be an object with a 'role'.", param="messages")
    if op == "messages" and not isinstance(body.get("max_tokens"), int):
        raise bad_request("'max_tokens' is required.", param="max_tokens")
    for name in ("tools", "stream_options", "metadata"):
        value = body.get(name)
        if value is not None and not isinstance(value, list if name == "tools" else dict):
            raise bad_request(f"'{name}' has the wrong type.", param=name)
    return body, None


def fill_context(ctx: RequestContext, op: str, body: dict[str, Any], headers: dict[bytes, bytes]) -> None:
    ctx.body = body
    ctx.stream = bool(body.get("stream") is True and op in STREAM_OPS)
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    user = body.get("user") if op != "messages" else metadata.get("user_id")
    # (Cut to what the ledger keeps: a megabyte "user" would otherwise ride along in every spend event.)
    ctx.customer_id = user[:MAX_CUSTOMER_ID] if isinstance(user, str) and user else None
    session = headers.get(b"x-gateway-session-id")
    session_id = session.decode("latin-1") if session else metadata.get("session_id")
    ctx.session_id = str(session_id)[:200] if session_id else None


def estimate(ctx: RequestContext, op: str, body: dict[str, Any], dep) -> None:
    ctx.estimated_prompt_tokens = estimate_prompt_tokens(body)
    if dep is None:
        return
    price = price_for(dep)
    ctx.max_output_tokens = requested_max_tokens(body, price.max_output_tokens) if op in GENERATIVE_OPS else 0
    ctx.output_cost_per_token = price.output if op in GENERATIVE_OPS else Decimal(0)
    cost = token_cost(price, prompt_tokens=ctx.estimated_prompt_tokens, completion_tokens=ctx.max_output_tokens)
    if op == "images":
        n = body.get("n") if isinstance(body.get("n"), int) else 1
        cost += max(1, n) * price.per_image
    elif op == "audio_speech":
        cost += len(str(body.get("input", ""))) * price.per_character
    ctx.estimated_cost = cost


def _call_factory(
    op: str, body: dict[str, Any], parts: list | None, stream: bool, include_usage: bool, beta: bytes | None = None
):
    chat_body: dict[str, Any] | None = None
    # The anthropic SDK's beta features (client.beta.messages, betas=[...]) need their header upstream.
    anthropic_beta = beta.decode("latin-1") if beta and beta.isascii() else None

    def make_call(dep, adapter) -> Call:
        nonlocal chat_body
        if op == "messages":
            if "messages" in adapter.native_ops:
                return Call("messages", body, stream=stream, anthropic_beta=anthropic_beta)
            if chat_body is None:
                try:
                    chat_body = messages_to_chat_request(body)
                except SHAPE_ERRORS as exc:
                    raise bad_request(f"The request body has an unexpected shape ({type(exc).__name__}).") from None
            return Call("chat", chat_body, stream=stream, include_usage=True)
        return Call(op, body, stream=stream, form=parts, include_usage=include_usage, anthropic_beta=anthropic_beta)

    return make_call


def _stream_error(op: str):
    def render(exc: GatewayError) -> bytes:
        if op == "messages":
            payload = {"type": "error", "error": {"type": exc.error_type, "message": exc.message}}
            return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"
        return b"data: " + orjson.dumps(exc.to_body()) + b"\n\n"

    return render


def _include_usage(op: str, body: dict[str, Any]) -> bool:
    """Whether the client asked for the usage chunk of a stream (the gateway asks upstreams for it anyway)."""
    return bool((body.get("stream_options") or {}).get("include_usage")) if op in ("chat", "completions") else False


async def model_call(gw: ProxyGateway, ctx: RequestContext, op: str, raw: bytes, headers, scope, receive, send) -> None:
    """A request that runs on a model: parse, resolve, reserve (``chain.pre_call``), call through the router,
    answer by the streaming or the whole-body path, then ``gw.finish`` exactly once whatever happened."""
    result = CallResult(status=502, error_type="internal_error")  # what the catch-all answers on a bug
    limit_type: str | None = None
    attempts: list[Attempt] = []
    pre_called = False
    dep = None
    try:
        body, parts = parse_request(op, raw, headers)
        model = requested_model(ctx, body.get("model") or ("omni-moderation-latest" if op == "moderations" else None))
        fill_context(ctx, op, body, headers)
        registry, group, deployments, support_op = await resolve(gw, ctx, op, model)
        first = gw.router.pick(group, deployments, set()) if deployments else None
        if first is not None:
            # What the limiters charge: this deployment's own capacity (the router may fail over later).
            ctx.deployment, ctx.llm_provider, ctx.deployment_id = first, first.provider, first.id
        estimate(ctx, op, body, first)
        # A key with a guardrail policy neither reads nor fills the response cache: an entry made without its
        # policy must not answer it (a prompt it refuses, an answer it masks), nor its masked text anyone else.
        cache = gw.response_cache.plan(ctx, op, body, headers, group) if ctx.key.guardrails is None else None
        hit = await gw.response_cache.lookup(cache, ctx.route) if cache is not None else None
        if hit is not None:  # no upstream call: nothing routed, nothing spent (apps/proxy/response_cache)
            ctx.cache_hit, ctx.deployment, ctx.deployment_id = True, None, None
            pre_called = True
            await gw.chain.pre_call(ctx)  # what a hit is charged: PROXY_CACHE_HITS_COUNT_AGAINST_LIMITS
            headers_out = gw.common_headers(ctx.request_id, ctx.started_at, deployment=CACHE_DEPLOYMENT)
            result = await gw.response_cache.answer(ctx, hit, send, headers_out)
            return
        pre_called = True
        await gw.chain.pre_call(ctx)
        if ctx.key.guardrails is not None:  # the key's policy (None for most keys: this check is all they pay)
            await gw.guardrails.check_request(ctx, op, body)  # may refuse (400), or mask ``body`` in place
        beta = headers.get(b"anthropic-beta")
        reply, dep, call = await gw.router.call(
            session=gw.session,
            ctx=ctx,
            registry=registry,
            group=group,
            op=support_op,
            first=first,
            make_call=_call_factory(op, body, parts, ctx.stream, _include_usage(op, body), beta),
            attempts=attempts,
        )
        upstream_ms = sum(a.ms for a in attempts)
        if isinstance(reply, StreamReply):
            head_overhead = (time.perf_counter() - ctx.started_at) * 1000 - upstream_ms  # what the head says
            result = await _relay_streamed(gw, ctx, op, model, reply, dep, upstream_ms, receive, send, cache)
            result.overhead_ms = head_overhead  # the rest of a stream's time is the upstream generating
        else:
            # (The result is set before the answer goes out: a client gone mid-send still leaves its cost.)
            result, body_out = _whole_body(ctx, op, model, reply, dep, call.op)
            if ctx.guardrails is not None:
                body_out = gw.guardrails.answer(ctx, body_out)  # masked, or a refusal that keeps the charge
            if cache is not None and reply.status == 200:  # kept before it is sent: a repeat right after it hits
                await gw.response_cache.keep(cache, body_out, result)
            if ctx.trace is not None:
                trace_reply(ctx, reply, body_out, dep)
            headers_out = gw.common_headers(
                ctx.request_id, ctx.started_at, upstream_ms, dep.label, format_cost(result.cost)
            )
            headers_out += encode_headers(ctx.response_headers)
            await send_response(send, reply.status, body_out, headers_out, reply.content_type)
    except ProxyRateLimitError as exc:
        result, limit_type = await send_rate_limited(gw, ctx, exc, send), exc.limit_type
    except GatewayError as exc:
        spent = result if result.prompt_tokens or result.completion_tokens or result.cost else None
        result = CallResult(status=exc.status, error_type=exc.kind)
        if spent is not None:  # refused after the upstream answered (a guardrail on the answer): still charged
            result.cost, result.prompt_tokens, result.completion_tokens = (
                spent.cost,
                spent.prompt_tokens,
                spent.completion_tokens,
            )
        upstream_ms = sum(a.ms for a in attempts)
        await gw.send_error(send, exc, ctx.request_id, ctx.started_at, ctx, upstream_ms, dep.label if dep else "none")
    finally:
        result.deployment_id, result.llm_provider = ctx.deployment_id, ctx.llm_provider
        result.latency_ms = (time.perf_counter() - ctx.started_at) * 1000
        if result.overhead_ms is None:  # a whole answer, an error or a refusal: all but the upstream's time
            result.overhead_ms = result.latency_ms - sum(a.ms for a in attempts)
        await gw.finish(ctx, result, pre_called=pre_called, event=spend_event(ctx, result, attempts, limit_type))


async def _relay_streamed(
    gw: ProxyGateway,
    ctx: RequestContext,
    op: str,
    model: str,
    reply: StreamReply,
    dep: Deployment,
    upstream_ms: float,
    receive,
    send,
    cache: CachePlan | None = None,
) -> CallResult:
    """The streaming path: relay the upstream's events as they come, then charge what it reported, or
    what was sent when it reported nothing (or the stream broke off). The cost header is the estimate:
    it goes out before the first token."""
    if op == "messages":
        encoder = NativeEncoder() if reply.native else MessagesEncoder(model, ctx.estimated_prompt_tokens)
    else:
        encoder = NativeEncoder() if reply.native else ChatEncoder()
    headers_out = gw.common_headers(
        ctx.request_id, ctx.started_at, upstream_ms, dep.label, format_cost(ctx.estimated_cost)
    )
    headers_out += encode_headers(ctx.response_headers)
    capture = ctx.trace is not None and ctx.key.trace_content
    keeper = None
    if cache is not None and not reply.native:
        keeper = gw.response_cache.stream_keeper(
            cache, lambda usage: _charged(CallResult(200), dep, usage).cost, reply.usage
        )
    masking = gw.guardrails.stream_filter(ctx) if ctx.guardrails is not None else None
    outcome = await relay_stream(
        send,
        receive,
        reply,
        encoder,
        headers_out,
        ctx.started_at,
        _stream_error(op),
        capture_text=capture,
        keeper=keeper,
        chunk_filter=masking,
    )
    if masking is not None:
        masking.outcome()
    if ctx.trace is not None:
        ctx.trace.response_model = dep.model
        if outcome.text is not None:
            ctx.trace.output = "".join(outcome.text)
    usage = reply.usage
    sent_tokens = (outcome.sent_chars + 3) // 4
    if not (outcome.status == 200 and usage.reported and usage.completion_tokens):
        usage.completion_tokens = sent_tokens
    usage.prompt_tokens = usage.prompt_tokens or ctx.estimated_prompt_tokens
    result = CallResult(status=outcome.status, error_type=outcome.error_type, ttft_ms=outcome.ttft_ms)
    return _charged(result, dep, usage)


def _whole_body(
    ctx: RequestContext, op: str, model: str, reply: Reply, dep: Deployment, call_op: str
) -> tuple[CallResult, bytes]:
    """The whole-body path: the answer in the client's shape (a chat answer turned back into a messages
    one when the upstream only speaks chat), and its charge (estimated when the upstream reported no
    usage)."""
    usage = reply.usage
    body_out = reply.body
    if op == "messages" and call_op == "chat":
        try:
            body_out = orjson.dumps(chat_to_messages_response(reply.obj or orjson.loads(reply.body), model))
        except SHAPE_ERRORS:
            raise malformed(dep.provider) from None
    if not usage.reported and op in GENERATIVE_OPS:
        usage.prompt_tokens = ctx.estimated_prompt_tokens
        usage.completion_tokens = estimate_text_tokens(body_out.decode("utf-8", "replace")) // 2
    return _charged(CallResult(status=reply.status), dep, usage), body_out


def _charged(result: CallResult, dep: Deployment, usage: Usage) -> CallResult:
    """``result`` with the call's tokens and its cost at the deployment's prices."""
    result.cost = call_cost(
        price_for(dep),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        images=usage.images,
        audio_seconds=usage.audio_seconds,
        characters=usage.characters,
    )
    result.prompt_tokens, result.completion_tokens = usage.prompt_tokens, usage.completion_tokens
    result.cached_tokens = usage.cached_tokens
    return result
