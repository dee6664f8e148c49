"""``/mcp``: the gateway as an MCP server (streamable HTTP transport, JSON responses) in front of the
organization's upstream MCP servers.

Every POST is authenticated by virtual key (``Authorization: Bearer sk-...``) through the proxy's cached
``AuthCache``, so a revoked key is cut off at its next message (401). ``initialize`` opens a session
(``Mcp-Session-Id``, signed: see ``sessions.py``); ``tools/list`` is the union of the tools the key may use,
named ``<server>__<tool>``; ``tools/call`` runs through ``calls.py`` (limits, upstream, ledger, metrics,
trace). The server never pushes messages of its own, so GET (the notification stream) and DELETE (session
termination) are 405, as the specification allows. Runs on the proxy's event loop, without Django's request
handler and without an ORM query in the steady state.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import orjson
from django.conf import settings

from apps.common.logs import request_id_var
from apps.mcp import calls, sessions
from apps.mcp.catalog import CatalogCache
from apps.mcp.jsonrpc import (
    FORBIDDEN,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    RATE_LIMITED,
    UNAUTHORIZED,
    RpcError,
    result_body,
)
from apps.mcp.upstream import UpstreamPool
from apps.proxy.app import Gateway
from apps.proxy.asgi_io import ClientGone, encode_headers, header_map, read_body, send_json, send_response
from apps.proxy.auth import bearer_token
from apps.proxy.errors import GatewayError
from apps.ratelimit import observe
from apps.ratelimit.errors import ProxyRateLimitError

logger = logging.getLogger("apps.mcp")
ROUTE = "/mcp"
PROTOCOL_VERSIONS = ("2025-03-26", "2025-06-18", "2025-11-25")
LATEST_PROTOCOL_VERSION = PROTOCOL_VERSIONS[-1]
SERVER_INFO = {"name": "llm-gateway", "title": "LLM gateway MCP", "version": "1"}
# Methods that need an open session; anything else but ``initialize`` and ``ping`` is "method not found"
# (also ``server/discover``, so the SDK's auto mode falls back to the initialize handshake).
SESSION_METHODS = frozenset({"tools/list", "tools/call"})
# The gateway's own refusals before a message is read, as JSON-RPC codes (the HTTP status stays as it is).
STATUS_CODES = {400: INVALID_REQUEST, 401: UNAUTHORIZED, 408: INVALID_REQUEST, 413: INVALID_REQUEST, 429: RATE_LIMITED}


class McpApp:
    """The ASGI callable mounted at /mcp (gateway_project/asgi.py). One per process, beside the proxy's Gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.catalog: CatalogCache | None = None
        self.pool: UpstreamPool | None = None

    def _setup(self) -> None:
        """On the first request, after the gateway's own startup (its auth cache, chain and database threads)."""
        self.catalog = CatalogCache(ttl=settings.MCP_CATALOG_TTL_SECONDS, run_sync=self.gw.run_sync)
        self.pool = UpstreamPool(tools_ttl=settings.MCP_TOOLS_CACHE_SECONDS)
        self.gw.invalidation_listeners.append(self.catalog.clear)
        self.gw.shutdown_hooks.append(self.close)

    async def close(self) -> None:
        pool, self.pool, self.catalog = self.pool, None, None
        if pool is not None:
            await pool.close()

    async def __call__(self, scope, receive, send) -> None:
        if not self.gw.ready:
            await self.gw.startup()
        if self.pool is None:
            self._setup()
        started = time.perf_counter()
        request_id = f"mcp_{self.gw.next_request_id()}"
        request_id_var.set(request_id)
        headers = header_map(scope)
        common = [(b"x-request-id", request_id.encode())]
        try:
            if scope["method"] != "POST":
                raise GatewayError(
                    405, "This MCP endpoint takes POST only (no server-sent stream; sessions end with their key).",
                    code="method_not_allowed", kind="not_found", headers={"allow": "POST"},
                )  # fmt: skip
            await self._post(scope, receive, send, headers, request_id, started, common)
        except RpcError as exc:
            await send_json(send, exc.status, exc.body(None), common + encode_headers(exc.headers))
            observe.request_unauthenticated(ROUTE, exc.status, "mcp", started)
        except GatewayError as exc:  # 401, 413, 408, an overloaded worker's 503
            rpc = RpcError(STATUS_CODES.get(exc.status, INTERNAL_ERROR), exc.message, status=exc.status)
            await send_json(send, exc.status, rpc.body(None), common + encode_headers(exc.headers))
            observe.request_unauthenticated(ROUTE, exc.status, exc.kind, started)
        except ProxyRateLimitError as exc:  # this source's unknown keys (apps/proxy/auth_guard.py)
            rpc = RpcError(RATE_LIMITED, exc.message, status=429, data=exc.to_body()["error"])
            await send_json(send, 429, rpc.body(None), common + encode_headers(exc.headers()))
            observe.request_unauthenticated(ROUTE, 429, None, started, failure=exc.exception_class)
        except ClientGone:
            return
        except Exception:
            logger.exception("unexpected error in /mcp (%s)", request_id)
            rpc = RpcError(INTERNAL_ERROR, "The gateway could not complete this request.", status=502)
            with contextlib.suppress(Exception):  # the response had started: nothing more to say
                await send_json(send, 502, rpc.body(None), common)

    async def _post(self, scope, receive, send, headers, request_id: str, started: float, common) -> None:
        origin = headers.get(b"origin")
        if origin is not None and origin.decode("latin-1") not in settings.MCP_ALLOWED_ORIGINS:
            # The specification's DNS-rebinding guard: a browser page may not drive this endpoint.
            raise RpcError(FORBIDDEN, "This Origin may not use the MCP endpoint.", status=403)
        gw = self.gw
        gw.cache_sync.check_local()
        token = bearer_token(headers)
        lag = gw.shedder.lag_past_threshold()
        if lag is not None:
            gw.shedder.admit(lag, gw.auth.known(token))
        key = await gw.auth.authenticate(token, scope.get("client"), headers.get(b"x-forwarded-for"))
        raw = await read_body(receive, headers, gw.max_body)
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RpcError(PARSE_ERROR, "Parse error: the body is not JSON.", status=400) from None
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            raise RpcError(
                INVALID_REQUEST, "Expected one JSON-RPC 2.0 message (batches are not supported).", status=400
            )
        method = message.get("method")
        if method is None or "id" not in message:  # a notification, or a response to a request we never send
            if method is not None and not isinstance(method, str):
                raise RpcError(INVALID_REQUEST, "'method' must be a string.", status=400)
            await send_response(send, 202, b"", common, content_type=b"application/json")
            return
        rpc_id = message["id"]
        if not isinstance(method, str) or not (isinstance(rpc_id, str | int) and not isinstance(rpc_id, bool)):
            raise RpcError(INVALID_REQUEST, "'method' must be a string and 'id' a string or integer.", status=400)
        params = message.get("params")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            await self._answer(send, rpc_id, RpcError(INVALID_PARAMS, "'params' must be an object."), common)
            return
        response_headers = list(common)
        try:
            if method == "initialize":
                result, session_id = self._initialize(key.key_id, params)
                response_headers.append((b"mcp-session-id", session_id.encode()))
            elif method == "ping":
                result = {}
            elif method in SESSION_METHODS:
                self._session(headers, key.key_id)
                assert self.catalog is not None and self.pool is not None
                if method == "tools/list":
                    result = await calls.tools_list(self.catalog, self.pool, key)
                else:
                    result = await calls.tools_call(
                        self.gw, self.catalog, self.pool, key, params, headers, request_id=request_id, started=started
                    )
            else:
                raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method[:100]}")
        except RpcError as exc:
            await self._answer(send, rpc_id, exc, response_headers)
            return
        await send_json(send, 200, result_body(rpc_id, result), response_headers)

    async def _answer(self, send, rpc_id: Any, exc: RpcError, headers) -> None:
        await send_json(send, exc.status, exc.body(rpc_id), headers + encode_headers(exc.headers))

    def _initialize(self, key_id: int | None, params: dict[str, Any]) -> tuple[dict[str, Any], str]:
        asked = params.get("protocolVersion")
        version = asked if asked in PROTOCOL_VERSIONS else LATEST_PROTOCOL_VERSION
        session_id = sessions.session_issue(secret=self.gw.secret, key_id=key_id, protocol_version=version)
        result = {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": SERVER_INFO,
            "instructions": "Tools of the MCP servers your key may use, named <server>__<tool>.",
        }
        return result, session_id

    def _session(self, headers: dict[bytes, bytes], key_id: int | None) -> str:
        """The session's protocol version; 400 without a session id, 404 for one this key did not open."""
        raw = headers.get(b"mcp-session-id")
        if raw is None:
            raise RpcError(INVALID_REQUEST, "Missing Mcp-Session-Id: send initialize first.", status=400)
        version = sessions.session_check(raw.decode("latin-1"), secret=self.gw.secret, key_id=key_id)
        if version is None:
            raise RpcError(INVALID_REQUEST, "Unknown session: initialize a new one.", status=404)
        asked = headers.get(b"mcp-protocol-version")
        if asked is not None and asked.decode("latin-1") not in PROTOCOL_VERSIONS:
            raise RpcError(INVALID_REQUEST, "Unsupported MCP-Protocol-Version.", status=400)
        return version
