"""``/openai/*``, ``/anthropic/*``, ``/gemini/*``: provider-native APIs that /v1 does not cover, relayed.

Per request: authenticate the virtual key (also by the provider's own conventions: ``x-api-key`` for
Anthropic, ``x-goog-api-key`` or ``?key=`` for Gemini), check the path (``passthrough_rules``), pick the
deployment (by the model the body or the Gemini path names, which the key must be allowed; otherwise
the provider's deployment marked ``extra.passthrough_default``), run the limiter chain, send the request
to the deployment's base URL with its credentials and model id, relay the answer as it arrives
(streams unbuffered), and bill the usage the provider reported in the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import orjson

from apps.proxy.asgi_io import ClientGone, encode_headers, header_map, read_body
from apps.proxy.auth import bearer_token
from apps.proxy.calls import ProxyGateway, requested_model, resolve, spend_event
from apps.proxy.context import CallResult, RequestContext
from apps.proxy.errors import (
    GatewayError,
    UpstreamError,
    bad_request,
    guardrails_unsupported,
    model_not_found,
    scrub_upstream_text,
)
from apps.proxy.limited import send_rate_limited
from apps.proxy.passthrough_rules import (
    FORWARDED_HEADERS,
    NATIVES,
    Native,
    estimate_call,
    path_model,
    path_segments,
    query_key,
    take_usage,
    upstream_path,
    upstream_query,
)
from apps.proxy.pricing import call_cost, price_for
from apps.proxy.providers.base import (
    ERROR_BODY_BYTES,
    Usage,
    private_strings,
    sse_events,
    upstream_error,
    upstream_io_error,
)
from apps.proxy.registry import Deployment
from apps.proxy.tokens import reject_client_upstream
from apps.ratelimit import observe
from apps.ratelimit.errors import ProxyRateLimitError

PREFIXES = tuple(f"/{name}/" for name in NATIVES)
USAGE_BODY_BYTES = 8 * 1024 * 1024  # a whole (non-stream) answer is kept up to this size to read its usage
CONNECT_TIMEOUT_SECONDS = 30.0


async def passthrough(gw: ProxyGateway, scope, receive, send, *, request_id: str, started: float) -> None:
    """One pass-through request; answers its own errors (OpenAI error shape) and finishes exactly once."""
    native = NATIVES[scope["path"].split("/", 2)[1]]
    headers = header_map(scope)
    try:
        token = bearer_token(headers) or _provider_token(native, headers, scope)
        lag = gw.shedder.lag_past_threshold()
        if lag is not None:
            gw.shedder.admit(lag, gw.auth.known(token))
        key = await gw.auth.authenticate(token, scope.get("client"), headers.get(b"x-forwarded-for"))
    except GatewayError as exc:
        await gw.send_error(send, exc, request_id, started)
        observe.request_unauthenticated(native.route, exc.status, exc.kind, started)
        return
    except ProxyRateLimitError as exc:
        head = gw.common_headers(request_id, started) + encode_headers(exc.headers())
        await _send_whole(send, 429, orjson.dumps(exc.to_body()), head)
        observe.request_unauthenticated(native.route, 429, None, started, failure=exc.exception_class)
        return
    ctx = RequestContext(request_id=request_id, key=key, route=native.route, started_at=started)
    result = CallResult(status=502, error_type="internal_error")
    limit_type, pre_called, upstream_ms = None, False, 0.0
    path = scope.get("raw_path") or scope["path"].encode("latin-1")
    try:
        if key.guardrails is not None:
            raise guardrails_unsupported(native.route)
        parts = path_segments(native, path)
        raw = await read_body(receive, headers, gw.max_body)
        body = _json_body(raw, headers)
        dep, upstream_model = await _deployment(gw, ctx, native, parts, body)
        if body is not None and upstream_model is not None and isinstance(body.get("model"), str):
            raw = orjson.dumps({**body, "model": upstream_model})
        estimate_call(ctx, dep, body, scope["method"])
        pre_called = True
        await gw.chain.pre_call(ctx)
        url = native.base(dep) + upstream_path(native, parts, upstream_model) + upstream_query(scope["query_string"])
        sent_at = time.perf_counter()
        result = await _relay(gw, ctx, native, dep, scope["method"], url, raw, headers, receive, send)
        upstream_ms = (time.perf_counter() - sent_at) * 1000
    except ProxyRateLimitError as exc:
        result, limit_type = await send_rate_limited(gw, ctx, exc, send), exc.limit_type
    except GatewayError as exc:
        result = CallResult(status=exc.status, error_type=exc.kind)
        await gw.send_error(send, exc, ctx.request_id, ctx.started_at, ctx)
    except ClientGone:
        result = CallResult(status=499, error_type="client_disconnect")
    finally:
        result.deployment_id, result.llm_provider = ctx.deployment_id, ctx.llm_provider
        result.latency_ms = (time.perf_counter() - ctx.started_at) * 1000
        result.overhead_ms = max(0.0, result.latency_ms - upstream_ms)
        event = spend_event(ctx, result, [], limit_type)
        event.metadata["path"] = path.decode("latin-1")[:200]
        await gw.finish(ctx, result, pre_called=pre_called, event=event)


def _provider_token(native: Native, headers: dict[bytes, bytes], scope) -> str | None:
    if native.name != "gemini":
        return None
    raw = headers.get(b"x-goog-api-key")
    return raw.strip().decode("latin-1") if raw else query_key(scope.get("query_string", b""))


def _json_body(raw: bytes, headers: dict[bytes, bytes]) -> dict[str, Any] | None:
    """A JSON object body (checked for client-chosen upstream fields), else None (uploads, empty GETs)."""
    if not raw or b"json" not in headers.get(b"content-type", b"application/json"):
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise bad_request("Request body is not valid JSON.") from None
    if not isinstance(body, dict):
        return None
    reject_client_upstream(raw, body)
    return body


async def _deployment(
    gw: ProxyGateway, ctx: RequestContext, native: Native, parts: list[str], body: dict[str, Any] | None
) -> tuple[Deployment, str | None]:
    """The deployment and the upstream model id to put in the request (None: the request names no model)."""
    named = path_model(native, parts) or (body or {}).get("model")
    if named is not None:
        model = requested_model(ctx, named)
        _registry, group, deployments, _op = await resolve(gw, ctx, "chat", model)
        own = tuple(d for d in deployments if d.provider == native.name)
        dep = gw.router.pick(group, own, set()) if own else None
        if dep is None:
            raise bad_request(f"The model '{model}' has no {native.name} deployment.", param="model")
    else:
        dep = await _default_deployment(gw, ctx, native)
    ctx.deployment, ctx.llm_provider, ctx.deployment_id = dep, dep.provider, dep.id
    return dep, dep.model if named is not None else None


async def _default_deployment(gw: ProxyGateway, ctx: RequestContext, native: Native) -> Deployment:
    """For paths without a model (files, batches, listings): the provider's deployment an operator marked
    ``extra.passthrough_default`` (its upstream account answers for everything such a path reaches)."""
    registry = await gw.get_registry()
    key = ctx.key
    found = [
        d
        for d in registry.by_id.values()
        if d.provider == native.name
        and d.extra.get("passthrough_default") is True
        and (key.is_master or d.organization_id in (None, key.organization_id))
        and key.allows_model(d.model_name)
    ]
    if not found:
        raise model_not_found(f"{native.name} (pass-through default)")
    dep = min(found, key=lambda d: (d.organization_id is None, d.priority, d.id))  # the organization's own first
    ctx.model = dep.model_name
    return dep


async def _relay(
    gw: ProxyGateway, ctx, native: Native, dep: Deployment, method: str, url: str, raw: bytes, headers, receive, send
) -> CallResult:
    """Send upstream, relay the answer as it comes, return what it cost."""
    out = {k.decode(): v.decode("latin-1") for k in FORWARDED_HEADERS if (v := headers.get(k)) is not None}
    out.update(native.auth_headers(dep, headers))
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=CONNECT_TIMEOUT_SECONDS, sock_read=dep.timeout_seconds or gw.settings_timeout
    )
    assert gw.session is not None
    try:
        response = await gw.session.request(
            method, url, headers=out, data=raw or None, timeout=timeout, allow_redirects=False
        )
    except (TimeoutError, aiohttp.ClientError) as exc:
        broken = f"Could not reach the upstream ({type(exc).__name__})."
        raise upstream_io_error(dep.provider, exc, broken) from None
    try:
        if response.status >= 300:
            return await _relay_error(gw, ctx, dep, response, send)
        return await _relay_body(gw, ctx, native, dep, response, receive, send)
    finally:
        response.close()


async def _relay_error(gw: ProxyGateway, ctx, dep: Deployment, response: aiohttp.ClientResponse, send) -> CallResult:
    """An upstream error: its own body (the provider's error shape) with the deployment's secrets scrubbed;
    a redirect or a refusal of the gateway's credentials is the gateway's 502 instead."""
    raw = b""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
        raw = await response.content.read(ERROR_BODY_BYTES)
    if response.status < 400 or response.status in (401, 403):
        if response.status < 400:
            raise UpstreamError(502, "The upstream answered with a redirect.", llm_provider=dep.provider)
        raise upstream_error(dep.provider, response.status, raw, response.headers, private_strings(dep))
    text = scrub_upstream_text(raw.decode("utf-8", "replace"), private_strings(dep)).encode()
    head = gw.common_headers(ctx.request_id, ctx.started_at, deployment=dep.label)
    retry = response.headers.get("retry-after")
    if retry and retry.isdigit():
        head.append((b"retry-after", retry.encode()))
    content_type = response.headers.get("content-type", "application/json").encode("latin-1")
    await _send_whole(send, response.status, text, [(b"content-type", content_type), *head])
    return CallResult(status=response.status, error_type="upstream_error")


async def _relay_body(
    gw: ProxyGateway, ctx, native: Native, dep: Deployment, response: aiohttp.ClientResponse, receive, send
) -> CallResult:
    """A whole answer of declared length is sent in one piece with its length (as /v1 does); streams and
    answers of unknown length are relayed chunk by chunk as they arrive."""
    content_type = response.headers.get("content-type", "application/octet-stream")
    streaming = "event-stream" in content_type
    usage, buffer, kept = Usage(), bytearray(), bytearray()
    head = [(b"content-type", content_type.encode("latin-1"))]
    head += gw.common_headers(ctx.request_id, ctx.started_at, deployment=dep.label) + encode_headers(
        ctx.response_headers
    )
    length = response.content_length
    if (
        not streaming
        and length is not None
        and length <= USAGE_BODY_BYTES
        and "Content-Encoding" not in response.headers
    ):
        try:
            kept[:] = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise upstream_io_error(dep.provider, exc, "The upstream connection broke.") from None
        head.append((b"content-length", str(len(kept)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": head})
        await send({"type": "http.response.body", "body": bytes(kept)})
        status, error = 200, None
    else:
        await send({"type": "http.response.start", "status": response.status, "headers": head})

        async def pump() -> None:
            async for data in response.content.iter_any():
                if streaming:
                    for _name, payload in sse_events(buffer, data):
                        with contextlib.suppress(orjson.JSONDecodeError):
                            take_usage(native.name, orjson.loads(payload), usage)
                elif len(kept) + len(data) <= USAGE_BODY_BYTES:
                    kept.extend(data)
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        status, error = await _pumped(pump, receive)
    if not streaming and kept and "json" in content_type:
        with contextlib.suppress(orjson.JSONDecodeError):
            take_usage(native.name, orjson.loads(bytes(kept)), usage)
    if not usage.reported:
        usage.prompt_tokens = ctx.estimated_prompt_tokens if ctx.max_output_tokens else 0
    cost = call_cost(
        price_for(dep), prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens, cache_write_tokens=usage.cache_write_tokens,
    )  # fmt: skip
    return CallResult(
        status=status if error else response.status, prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens, cached_tokens=usage.cached_tokens, cost=cost, error_type=error,
    )  # fmt: skip


async def _pumped(pump, receive) -> tuple[int, str | None]:
    """Run the relay until it ends or the client leaves (then the upstream is closed by the caller)."""

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    relay, watcher = asyncio.ensure_future(pump()), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait((relay, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (relay, watcher):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if not relay.done() or relay.cancelled():
        return 499, "client_disconnect"
    if relay.exception() is not None:
        return 502, "upstream_connection"  # the head is out: the cut body is all the client can be told
    return 200, None


async def _send_whole(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    if not any(name == b"content-type" for name, _ in headers):
        headers = [(b"content-type", b"application/json"), *headers]
    await send({"type": "http.response.start", "status": status, "headers": [*headers]})
    await send({"type": "http.response.body", "body": body})
