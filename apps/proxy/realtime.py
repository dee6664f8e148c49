"""``/v1/realtime?model=...``: a WebSocket relay to OpenAI and Azure realtime deployments.

Before the upgrade: authenticate the virtual key (``Authorization: Bearer``, ``x-api-key``, ``api-key``,
or the browser SDKs' subprotocol ``openai-insecure-api-key.<key>``), resolve the model like /v1 (404
unknown, 403 not allowed), run the limiter chain for the session (one request against RPM, and a
parallel slot held for the session's whole life), connect upstream through the pooled aiohttp session
(its ``SafeResolver`` checks the address) with the deployment's credentials. Any refusal there is a
plain HTTP answer (401/403/404/429/502) instead of the upgrade, in the OpenAI error shape.

After it: messages are relayed both ways unchanged, except that each response is a request of its own
(``realtime_billing.ResponseLedger``: RPM and budget checked per ``response.create``, usage from
``response.done`` billed in the ledger, one row per response) and the upstream's error texts are
scrubbed of the deployment's secrets. The session ends when either side closes, or at
``PROXY_REALTIME_MAX_SESSION_SECONDS`` (an ``error`` event with code ``session_expired``, then close
code 1008), and its slot is released whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import orjson
from django.conf import settings

from apps.proxy.asgi_io import encode_headers
from apps.proxy.auth import bearer_token
from apps.proxy.calls import ProxyGateway, requested_model, resolve, spend_event
from apps.proxy.context import CallResult, KeyContext, RequestContext
from apps.proxy.errors import GatewayError, UpstreamError, bad_request, guardrails_unsupported
from apps.proxy.pricing import price_for
from apps.proxy.providers.base import private_strings, upstream_error, upstream_io_error
from apps.proxy.realtime_billing import ResponseLedger
from apps.proxy.registry import Deployment
from apps.ratelimit import observe
from apps.ratelimit.errors import ProxyRateLimitError

ROUTE = "/v1/realtime"
KEY_SUBPROTOCOL = "openai-insecure-api-key."
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"
CLOSE_POLICY = 1008  # the session cap (not one the SDKs reconnect after)
CLOSE_UPSTREAM_LOST = 1011
CONNECT_TIMEOUT_SECONDS = 30.0


def subprotocols(scope: dict[str, Any]) -> list[str]:
    return [str(p) for p in scope.get("subprotocols") or ()]


def client_token(headers: dict[bytes, bytes], offered: list[str]) -> str | None:
    """The key from the usual headers, else from the subprotocol browsers must use (they cannot set headers)."""
    token = bearer_token(headers)
    if token:
        return token
    for protocol in offered:
        if protocol.startswith(KEY_SUBPROTOCOL) and len(protocol) > len(KEY_SUBPROTOCOL):
            return protocol[len(KEY_SUBPROTOCOL) :]
    return None


async def deny(
    scope: dict[str, Any], send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    """Refuse the upgrade with an HTTP answer (the ASGI denial-response extension), else a bare close."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        head = [(b"content-type", b"application/json"), *headers]
        await send({"type": "websocket.http.response.start", "status": status, "headers": head})
        await send({"type": "websocket.http.response.body", "body": orjson.dumps(body)})
    else:
        await send({"type": "websocket.close", "code": CLOSE_POLICY})


async def realtime_session(gw: ProxyGateway, scope, receive, send, *, request_id: str, started: float) -> None:
    """One WebSocket on /v1/realtime, from the handshake to its close."""
    if (await receive())["type"] != "websocket.connect":
        return
    headers = dict(scope["headers"])
    gw.cache_sync.check_local()
    try:
        token = client_token(headers, subprotocols(scope))
        lag = gw.shedder.lag_past_threshold()
        if lag is not None:
            gw.shedder.admit(lag, gw.auth.known(token))
        key = await gw.auth.authenticate(token, scope.get("client"), headers.get(b"x-forwarded-for"))
    except GatewayError as exc:
        await deny(
            scope, send, exc.status, exc.to_body(), gw.common_headers(request_id, started) + encode_headers(exc.headers)
        )
        observe.request_unauthenticated(ROUTE, exc.status, exc.kind, started)
        return
    except ProxyRateLimitError as exc:  # the source's key misses (auth_guard)
        await deny(
            scope, send, 429, exc.to_body(), gw.common_headers(request_id, started) + encode_headers(exc.headers())
        )
        observe.request_unauthenticated(ROUTE, 429, None, started, failure=exc.exception_class)
        return
    await RealtimeSession(gw, key, scope, receive, send, request_id=request_id, started=started).run(headers)


class RealtimeSession:
    def __init__(self, gw: ProxyGateway, key: KeyContext, scope, receive, send, *, request_id: str, started: float):
        self.gw, self.scope, self.receive, self.send = gw, scope, receive, send
        self.ctx = RequestContext(request_id=request_id, key=key, route=ROUTE, started_at=started)
        self.client_open = False
        self.send_lock = asyncio.Lock()

    async def run(self, headers: dict[bytes, bytes]) -> None:
        ctx, gw = self.ctx, self.gw
        result = CallResult(status=502, error_type="internal_error")
        limit_type, pre_called, dep = None, False, None
        try:
            if ctx.key.guardrails is not None:
                raise guardrails_unsupported(ROUTE)
            dep = await self._resolve(headers)
            pre_called = True
            await gw.chain.pre_call(ctx)
            upstream = await self._connect(dep, headers)
        except ProxyRateLimitError as exc:
            exc.tag(llm_provider=ctx.llm_provider, model=ctx.model)
            limit_type = exc.limit_type
            result = CallResult(status=429, error_type=f"rate_limit:{exc.limit_type}", limit_scope=exc.scope)
            await deny(self.scope, self.send, 429, exc.to_body(), self._headers() + encode_headers(exc.headers()))
        except GatewayError as exc:
            result = CallResult(status=exc.status, error_type=exc.kind)
            await deny(self.scope, self.send, exc.status, exc.to_body(), self._headers() + encode_headers(exc.headers))
        else:
            try:
                result = await self._serve(upstream, dep)
            finally:  # whatever happened (a client gone before the accept, a bug, a cancelled task): slot released
                result.deployment_id, result.llm_provider = dep.id, dep.provider
                result.latency_ms = (time.perf_counter() - ctx.started_at) * 1000
                # The session itself is no ledger row (its responses are): only the slot and the counts to settle.
                await gw.finish(ctx, result, pre_called=True, event=None)
            return
        result.deployment_id, result.llm_provider = ctx.deployment_id, ctx.llm_provider
        result.latency_ms = (time.perf_counter() - ctx.started_at) * 1000
        await gw.finish(ctx, result, pre_called=pre_called, event=spend_event(ctx, result, [], limit_type))

    def _headers(self, deployment: str = "none") -> list[tuple[bytes, bytes]]:
        ctx = self.ctx
        return self.gw.common_headers(ctx.request_id, ctx.started_at, deployment=deployment) + encode_headers(
            ctx.response_headers
        )

    async def _resolve(self, headers: dict[bytes, bytes]) -> Deployment:
        """The deployment the session will run on (404/403 as on /v1); the session's context filled in."""
        ctx, gw = self.ctx, self.gw
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        model = requested_model(ctx, (query.get("model") or [None])[0])
        session = headers.get(b"x-gateway-session-id")
        ctx.session_id = session.decode("latin-1")[:200] if session else None
        _registry, group, deployments, _op = await resolve(gw, ctx, "realtime", model)
        dep = gw.router.pick(group, deployments, set()) if deployments else None
        if dep is None:
            raise bad_request(f"The model '{model}' does not support {ROUTE}.", param="model", code="unsupported_route")
        ctx.deployment, ctx.llm_provider, ctx.deployment_id = dep, dep.provider, dep.id
        return dep

    async def _connect(self, dep: Deployment, headers: dict[bytes, bytes]) -> aiohttp.ClientWebSocketResponse:
        """The upstream WebSocket, with the deployment's credentials (the client's never go upstream)."""
        adapter: Any = self.gw.adapters[dep.provider]
        upstream_headers = dict(adapter.auth_headers(dep))
        beta = headers.get(b"openai-beta")
        if beta and beta.isascii():
            upstream_headers["openai-beta"] = beta.decode("latin-1")
        elif BETA_SUBPROTOCOL in subprotocols(self.scope):
            upstream_headers["openai-beta"] = "realtime=v1"
        assert self.gw.session is not None
        try:
            async with asyncio.timeout(min(self.gw.settings_timeout, CONNECT_TIMEOUT_SECONDS)):
                return await self.gw.session.ws_connect(
                    adapter.realtime_url(dep),
                    headers=upstream_headers,
                    max_msg_size=settings.PROXY_REALTIME_MAX_MESSAGE_BYTES,
                    autoping=True,
                    heartbeat=30.0,
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (101, 200) or exc.status < 300:
                raise UpstreamError(502, "The upstream did not open a WebSocket.", llm_provider=dep.provider) from None
            raise upstream_error(dep.provider, exc.status, b"", exc.headers or {}, private_strings(dep)) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise upstream_io_error(
                dep.provider, exc, f"Could not reach the upstream ({type(exc).__name__})."
            ) from None

    async def _serve(self, upstream: aiohttp.ClientWebSocketResponse, dep: Deployment) -> CallResult:
        """Accept, relay both ways until one side closes or the session cap, close the other side."""
        offered = subprotocols(self.scope)
        ledger = ResponseLedger(self.gw, self.ctx, dep, price_for(dep), self._send_text, upstream.send_str)
        to_upstream = to_client = None
        cap = settings.PROXY_REALTIME_MAX_SESSION_SECONDS
        result = CallResult(status=200)
        try:
            await self.send(
                {
                    "type": "websocket.accept",
                    "subprotocol": "realtime" if "realtime" in offered else None,
                    "headers": self._headers(dep.label),
                }
            )
            self.client_open = True
            to_upstream = asyncio.ensure_future(self._client_to_upstream(upstream, ledger))
            to_client = asyncio.ensure_future(self._upstream_to_client(upstream, ledger))
            remaining = max(0.0, cap - (time.perf_counter() - self.ctx.started_at))
            done, _pending = await asyncio.wait(
                {to_upstream, to_client}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                result.error_type = "session_expired"
                await self._send_text(self._expired_event(cap))
                await self._close_client(CLOSE_POLICY, "session length limit reached")
            elif to_client in done:  # the upstream closed (or broke): tell the client the same way
                code = upstream.close_code
                lost = code is None or (code >= 1002 and code != CLOSE_POLICY)
                await self._close_client(CLOSE_UPSTREAM_LOST if lost else code, "upstream closed the session")
            else:
                result.error_type = None  # the client closed: the ordinary end of a session
        finally:
            tasks = [task for task in (to_upstream, to_client) if task is not None]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            with contextlib.suppress(Exception):
                await upstream.close()
            await ledger.close()
        return result

    def _expired_event(self, cap: float) -> str:
        message = f"The session reached the gateway's maximum duration of {cap:g} seconds."
        error = {"type": "invalid_request_error", "code": "session_expired", "message": message, "param": None}
        return orjson.dumps({"type": "error", "event_id": f"event_gw_{self.ctx.request_id}", "error": error}).decode()

    async def _client_to_upstream(self, upstream: aiohttp.ClientWebSocketResponse, ledger: ResponseLedger) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "websocket.disconnect":
                self.client_open = False
                return
            text = message.get("text")
            if text is not None:
                # Each response.create is a request of its own: reserved first, dropped (an error event) if refused.
                if "response.create" in text and not await ledger.response_requested(text):
                    continue
                await upstream.send_str(text)
            elif message.get("bytes") is not None:
                await upstream.send_bytes(message["bytes"])

    async def _upstream_to_client(self, upstream: aiohttp.ClientWebSocketResponse, ledger: ResponseLedger) -> None:
        async for message in upstream:
            if message.type == aiohttp.WSMsgType.TEXT:
                await self._send_text(await ledger.upstream_event(message.data))
            elif message.type == aiohttp.WSMsgType.BINARY:
                await self._send({"type": "websocket.send", "bytes": message.data})
            else:  # an error on the upstream socket: the session is over
                return

    async def _send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def _send(self, message: dict[str, Any]) -> None:
        async with self.send_lock:  # both directions' tasks answer the client
            if self.client_open:
                await self.send(message)

    async def _close_client(self, code: int, reason: str) -> None:
        async with self.send_lock:
            if self.client_open:
                self.client_open = False
                with contextlib.suppress(Exception):
                    await self.send({"type": "websocket.close", "code": code, "reason": reason})
