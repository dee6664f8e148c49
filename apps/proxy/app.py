"""The /v1 ASGI application: a bare ASGI callable, async end to end, never Django's request handler.

One ``Gateway`` per process holds what requests share: the pooled aiohttp session, the auth and
model-registry caches, the router's deployment health, the limiter chain. Per request it does:
read the bounded body -> authenticate (cached) -> resolve the model -> ``chain.pre_call`` -> router ->
relay -> ``finish`` (``chain.post_call`` exactly once, then one spend event), see ``endpoints.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from django.conf import settings

from apps.common.intervallog import IntervalLog
from apps.common.logs import request_id_var
from apps.guardrails.base import build_guardrails
from apps.keys.services import key_legacy_upgrade
from apps.proxy import endpoints
from apps.proxy.asgi_io import ClientGone, encode_headers, send_json
from apps.proxy.auth import AuthCache
from apps.proxy.auth_guard import AuthMissGuard
from apps.proxy.cache_sync import CacheSync
from apps.proxy.classifier import GatewayClassifier
from apps.proxy.context import CallResult, RequestContext
from apps.proxy.errors import GatewayError
from apps.proxy.last_used import LastUsedRecorder
from apps.proxy.overload import LoadShedder
from apps.proxy.passthrough import passthrough
from apps.proxy.providers import build_adapters
from apps.proxy.realtime import realtime_session
from apps.proxy.registry import EMPTY_REGISTRY, UNKNOWN_MODEL_RELOAD_SECONDS, Registry, load_registry
from apps.proxy.resolver import SafeResolver
from apps.proxy.response_cache.flow import ResponseCache
from apps.proxy.router import Router
from apps.ratelimit import observe
from apps.ratelimit.chain import build_chain
from apps.ratelimit.errors import ProxyRateLimitError
from apps.spend.events import SpendEvent
from apps.spend.outbox import SpendOutbox, spend_outbox_create

if TYPE_CHECKING:
    from apps.proxy.tracing import Tracing

logger = logging.getLogger("apps.proxy")
REGISTRY_RETRY_SECONDS = 1.0

ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/v1/chat/completions"): "chat",
    ("POST", "/v1/completions"): "completions",
    ("POST", "/v1/embeddings"): "embeddings",
    ("POST", "/v1/responses"): "responses",
    ("POST", "/v1/images/generations"): "images",
    ("POST", "/v1/audio/speech"): "audio_speech",
    ("POST", "/v1/audio/transcriptions"): "audio_transcriptions",
    ("POST", "/v1/moderations"): "moderations",
    ("POST", "/v1/rerank"): "rerank",
    ("POST", "/v1/messages"): "messages",
    ("GET", "/v1/models"): "models",
    ("POST", "/v1/files"): "files_create",
    ("POST", "/v1/batches"): "batches_create",
    ("GET", "/v1/files"): "files_list",
    ("GET", "/v1/batches"): "batches_list",
    ("POST", "/v1/messages/count_tokens"): "messages_count_tokens",
    ("GET", "/v1/openapi.json"): "openapi",
}
# /v1/<collection>/<id>[/<action>]
PATH_ROUTES: dict[tuple[str, str, str], str] = {
    ("GET", "models", ""): "models_get",
    ("GET", "files", ""): "files_get",
    ("GET", "files", "content"): "files_content",
    ("DELETE", "files", ""): "files_delete",
    ("GET", "batches", ""): "batches_get",
    ("POST", "batches", "cancel"): "batches_cancel",
}
# How each route above names the model it runs on: a JSON "body" field, a multipart "form" field (or the
# x-gateway-model header), the lines of an uploaded "batch_file", the "path" (/v1/models/{id}), the model
# "listing"; None: no model (file and batch ids are signed handles that carry their organization).
# Names resolve within the key's organization (Registry.resolve). tests/e2e/test_rule_private_names_invisible.py
# sends another organization's private names through every entry, and fails while a route lacks one.
MODEL_INPUT: dict[str, str | None] = {
    "chat": "body",
    "completions": "body",
    "embeddings": "body",
    "responses": "body",
    "images": "body",
    "audio_speech": "body",
    "audio_transcriptions": "form",
    "moderations": "body",
    "rerank": "body",
    "messages": "body",
    "messages_count_tokens": "body",
    "files_create": "form",
    "batches_create": "batch_file",
    "models": "listing",
    "models_get": "path",
    "files_list": None,
    "batches_list": None,
    "openapi": None,
    "files_get": None,
    "files_content": None,
    "files_delete": None,
    "batches_get": None,
    "batches_cancel": None,
}


class Gateway:
    """The ASGI callable mounted at /v1 (see gateway_project/asgi.py)."""

    def __init__(self) -> None:
        self.ready = False
        self._id_prefix = ""
        self.openapi: bytes | None = None
        self._id_counter = itertools.count(1)
        self.session: aiohttp.ClientSession | None = None
        self.db = ThreadPoolExecutor(max_workers=2, thread_name_prefix="proxy-db")
        self.registry: Registry = EMPTY_REGISTRY
        self._registry_stale = True
        self._registry_retry_at = 0.0
        self._registry_lock: asyncio.Lock | None = None
        self._init_lock: asyncio.Lock | None = None
        self.tracing: Tracing | None = None  # OpenTelemetry: set at startup when an OTLP endpoint is configured
        # Apps above the proxy that serve beside it (the /mcp gateway, apps/mcp) hook into its cache
        # invalidation and its shutdown here, so the proxy never imports them.
        self.invalidation_listeners: list[Callable[[str], None]] = []
        self.shutdown_hooks: list[Callable[[], Awaitable[None]]] = []

    # --- lifecycle -----------------------------------------------------------------------------
    async def startup(self) -> None:
        """Build shared state on the running loop (from lifespan, or lazily on the first request)."""
        if self.ready:
            return
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if self.ready:
                return
            # Request ids: a random per-process prefix (drawn here, after any fork) plus a counter. As unique
            # as uuid4 for the ledger, without a getrandom() syscall per request (it drops and re-takes the GIL).
            self._id_prefix = os.urandom(8).hex()

            self.settings_timeout = settings.PROXY_UPSTREAM_TIMEOUT_SECONDS
            self.max_body = settings.PROXY_MAX_BODY_BYTES
            self.events = IntervalLog(logger, interval=settings.LOG_EVENT_INTERVAL_SECONDS)
            self.secret = settings.GATEWAY_SECRET_KEY
            self.adapters = build_adapters()
            self.router = Router(
                adapters=self.adapters,
                num_retries=settings.PROXY_NUM_RETRIES,
                timeout_seconds=settings.PROXY_UPSTREAM_TIMEOUT_SECONDS,
                cooldown_failures=getattr(settings, "PROXY_COOLDOWN_FAILURES", 3),
                cooldown_seconds=getattr(settings, "PROXY_COOLDOWN_SECONDS", 5.0),
                log_interval=settings.LOG_EVENT_INTERVAL_SECONDS,
            )
            guard = None
            if settings.AUTH_MISS_BURST > 0:
                guard = AuthMissGuard(
                    rate=settings.AUTH_MISS_RATE_PER_SECOND,
                    burst=settings.AUTH_MISS_BURST,
                    lookups_per_source=settings.AUTH_LOOKUPS_PER_SOURCE,
                )
            self.auth = AuthCache(
                ttl=settings.AUTH_CACHE_TTL_SECONDS,
                master_key=settings.GATEWAY_MASTER_KEY,
                run_sync=self.run_sync,
                log_interval=settings.LOG_EVENT_INTERVAL_SECONDS,
                guard=guard,
                trusted_proxies=settings.GATEWAY_TRUSTED_PROXY_COUNT,
                legacy_upgrade=key_legacy_upgrade,
            )
            self.chain = build_chain()
            self.response_cache = ResponseCache.from_settings()
            # The guardrails' classifier (moderation) calls a model through this gateway's own router.
            self.guardrails = build_guardrails(classifier=GatewayClassifier(self))
            if settings.OTEL_TRACES_ENABLED:
                # The OpenTelemetry SDK loads only when tracing is on: off, no request pays for it.
                from apps.proxy.tracing import Tracing

                self.tracing = Tracing()
            self.shedder = LoadShedder(threshold_ms=settings.PROXY_SHED_LOOP_LAG_MS)
            self.last_used = LastUsedRecorder(run_sync=self.run_sync)
            self.spend: SpendOutbox = spend_outbox_create()  # closed (flushed) in shutdown()
            self.cache_sync = CacheSync(redis=settings.REDIS_TARGET, on_change=self.invalidate)
            self.cache_sync.start()
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30, resolver=SafeResolver()
                ),
                json_serialize=lambda o: orjson.dumps(o).decode(),
                # One pool serves every tenant: an upstream's Set-Cookie must never ride along on the next
                # tenant's request (and there is no cookie bookkeeping per call).
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
            self._registry_lock = asyncio.Lock()
            # Django imports the URLconf (every view, API and admin module) on its first request, on this
            # event loop: do it now, before serving, rather than as a lag spike that sheds the first /v1 calls.
            from django.urls import get_resolver

            get_resolver().url_patterns  # noqa: B018
            # Everything loaded so far (Django, apps, settings) lives for the whole process: keep the
            # cyclic GC from re-scanning it on every full collection under load (fewer long pauses).
            gc.collect()
            gc.freeze()
            gc.set_threshold(settings.GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
            self.shedder.start()  # after the one-off work above, which would read as lag
            self.ready = True

    async def shutdown(self) -> None:
        if not self.ready:
            return
        self.ready = False
        for hook in self.shutdown_hooks:
            try:
                await hook()
            except Exception:
                logger.exception("a shutdown hook failed")
        await self.cache_sync.stop()
        await self.router.close()  # its shared-cooldown listener (apps/proxy/cooldown_sync.py)
        await self.last_used.flush()
        await self.spend.close()  # no spend event may die with the process
        await self.chain.close()  # the limiters' counter backend (its Redis connection)
        await self.response_cache.close()
        if self.tracing is not None:
            tracing, self.tracing = self.tracing, None
            await asyncio.to_thread(tracing.shutdown)  # the spans still queued are exported, not lost
        if self.session is not None:
            await self.session.close()
        await self.shedder.stop()
        self.db.shutdown(wait=False)
        self.db = ThreadPoolExecutor(max_workers=2, thread_name_prefix="proxy-db")

    async def run_sync(self, fn, *args):
        """Run ORM work on the proxy's own database threads (cache misses only), with fresh connections."""

        def call():
            from django.db import close_old_connections

            close_old_connections()
            try:
                return fn(*args)
            finally:
                close_old_connections()

        return await asyncio.get_running_loop().run_in_executor(self.db, call)

    def invalidate(self, reason: str) -> None:
        self.auth.clear()
        self._registry_stale = True  # deployments and groups, whose capacities the limiters read from the context
        self.chain.invalidate()  # the limiters' customer snapshots
        for listener in self.invalidation_listeners:
            listener(reason)

    def next_request_id(self) -> str:
        """A fresh request id's unique part: this process's random prefix and a counter."""
        return f"{self._id_prefix}{next(self._id_counter):010x}"

    async def get_registry(self, *, unknown_model: bool = False) -> Registry:
        """The current snapshot; reloaded (once, whoever asks) when invalidated or asked for an unknown model.

        A failed load keeps serving the last snapshot and retries at most once a second, so a database
        outage neither blocks every request nor loses the models already known.
        """
        self.cache_sync.check_local()
        if self._registry_due(unknown_model):
            assert self._registry_lock is not None
            async with self._registry_lock:
                if self._registry_due(unknown_model):
                    self._registry_stale = False
                    try:
                        self.registry = await self.run_sync(load_registry)
                    except Exception as exc:
                        self._registry_stale = True
                        self._registry_retry_at = time.monotonic() + REGISTRY_RETRY_SECONDS
                        self.events.event(
                            f"registry:{type(exc).__name__}",
                            "model registry could not be loaded; serving the last snapshot",
                            level=logging.ERROR,
                            exc_info=True,
                        )
        if not self.registry.loaded_at:
            raise GatewayError(503, "The model registry is unavailable.", kind="registry", headers={"retry-after": "1"})
        return self.registry

    def _registry_due(self, unknown_model: bool) -> bool:
        now = time.monotonic()
        if now < self._registry_retry_at:
            return False
        if self._registry_stale or not self.registry.loaded_at:
            return True  # (never loaded: wait for the load in progress rather than answer without models)
        return unknown_model and now - self.registry.loaded_at > UNKNOWN_MODEL_RELOAD_SECONDS

    # --- ASGI ----------------------------------------------------------------------------------
    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "websocket":
            await self.websocket(scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("proxy startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def route(self, method: str, path: str) -> tuple[str | None, tuple[str, ...]]:
        if path.endswith("/") and len(path) > 4:
            path = path[:-1]
        op = ROUTES.get((method, path))
        if op is not None:
            return op, ()
        parts = path.split("/")
        # Model ids may hold slashes ("meta-llama/Llama-3-8b"): everything after /v1/models/ is the id.
        if method == "GET" and len(parts) > 4 and parts[2] == "models" and all(parts[3:]):
            return "models_get", ("/".join(parts[3:]),)
        # ["", "v1", collection, id, action?]
        if len(parts) in (4, 5) and parts[3]:
            op = PATH_ROUTES.get((method, parts[2], parts[4] if len(parts) == 5 else ""))
            if op is not None:
                return op, (parts[3],)
        return None, ()

    async def http(self, scope, receive, send) -> None:
        if not self.ready:
            await self.startup()
        started = time.perf_counter()
        request_id = f"req_{self.next_request_id()}"
        # Every line logged while this request runs carries its id (each request is its own task, so the
        # value never leaks into the next one).
        request_id_var.set(request_id)
        path = scope["path"]
        op, args = self.route(scope["method"], path)
        try:
            if op is None:
                known = any(p == path for _m, p in ROUTES) or path.split("/")[2:3] in (
                    ["models"],
                    ["files"],
                    ["batches"],
                )
                raise GatewayError(
                    405 if known else 404,
                    f"Unknown request URL: {scope['method']} {path}.",
                    code="unknown_url",
                    kind="not_found",
                )
            await endpoints.handle(self, op, args, scope, receive, send, started=started, request_id=request_id)
        except GatewayError as exc:  # before the request had a key (a 401, an unknown URL): counted here
            await self.send_error(send, exc, request_id, started)
            route = endpoints.ROUTE_OF.get(op, endpoints.UNKNOWN_ROUTE) if op else endpoints.UNKNOWN_ROUTE
            observe.request_unauthenticated(route, exc.status, exc.kind, started)
        except ProxyRateLimitError as exc:  # the source's key misses (apps/proxy/auth_guard.py)
            headers = self.common_headers(request_id, started) + encode_headers(exc.headers())
            await send_json(send, 429, exc.to_body(), headers)
            route = endpoints.ROUTE_OF.get(op, endpoints.UNKNOWN_ROUTE) if op else endpoints.UNKNOWN_ROUTE
            observe.request_unauthenticated(route, 429, None, started, failure=exc.exception_class)
        except ClientGone:
            return
        except Exception:
            # A bug of ours, not the client's or the upstream's: log it with the request id and answer
            # in the OpenAI error shape (if the response has not started yet) rather than a bare 500 page.
            logger.exception("unexpected error in %r %r (%s)", scope["method"], path, request_id)  # %r: no forged lines
            error = GatewayError(
                502, "The gateway could not complete this request.", code="gateway_error", kind="internal_error"
            )
            with contextlib.suppress(Exception):
                await self.send_error(send, error, request_id, started)

    async def passthrough(self, scope, receive, send) -> None:
        """``/openai/*``, ``/anthropic/*``, ``/gemini/*`` (provider-native APIs, see apps/proxy/passthrough.py)."""
        if not self.ready:
            await self.startup()
        started = time.perf_counter()
        request_id = f"req_{self._id_prefix}{next(self._id_counter):010x}"
        request_id_var.set(request_id)
        try:
            await passthrough(self, scope, receive, send, request_id=request_id, started=started)
        except ClientGone:
            return
        except Exception:
            logger.exception("unexpected error in %r %r (%s)", scope["method"], scope["path"], request_id)
            error = GatewayError(
                502, "The gateway could not complete this request.", code="gateway_error", kind="internal_error"
            )
            with contextlib.suppress(Exception):
                await self.send_error(send, error, request_id, started)

    async def websocket(self, scope, receive, send) -> None:
        """``/v1/realtime`` (gateway_project/asgi.py sends no other WebSocket path here)."""
        if not self.ready:
            await self.startup()
        started = time.perf_counter()
        request_id = f"req_{self._id_prefix}{next(self._id_counter):010x}"
        request_id_var.set(request_id)
        try:
            await realtime_session(self, scope, receive, send, request_id=request_id, started=started)
        except Exception:
            # A bug of ours: logged with the request id; the server closes the socket (1011) or refuses the upgrade.
            logger.exception("unexpected error in realtime session %s", request_id)

    # --- responses and the end of a request ----------------------------------------------------
    def common_headers(
        self, request_id: str, started: float, upstream_ms: float = 0.0, deployment: str = "none", cost: str = "0"
    ) -> list[tuple[bytes, bytes]]:
        overhead = max(0.0, (time.perf_counter() - started) * 1000 - upstream_ms)
        return [
            (b"x-request-id", request_id.encode()),
            (b"x-gateway-overhead-ms", f"{overhead:.3f}".encode()),
            (b"x-gateway-deployment", deployment.encode("latin-1", "replace")),
            (b"x-gateway-cost", cost.encode()),
        ]

    async def send_error(
        self,
        send,
        exc: GatewayError,
        request_id: str,
        started: float,
        ctx: RequestContext | None = None,
        upstream_ms: float = 0.0,
        deployment: str = "none",
    ) -> None:
        headers = self.common_headers(request_id, started, upstream_ms, deployment)
        if ctx is not None and ctx.response_headers:
            headers += encode_headers(ctx.response_headers)
        headers += encode_headers(exc.headers)
        await send_json(send, exc.status, exc.to_body(), headers)

    async def finish(
        self, ctx: RequestContext, result: CallResult, *, pre_called: bool, event: SpendEvent | None
    ) -> None:
        """End of every authenticated request: limiter reconcile/release, then the spend event.

        Part of the gateway's interface to the /v1 flows (``apps.proxy.calls.ProxyGateway``). Other apps
        extend the end of a request here (metrics). Never raises: the response is gone.
        """
        if pre_called:
            try:
                await self.chain.post_call(ctx, result)
            except Exception:
                logger.exception("post_call failed for %s", ctx.request_id)
        observe.request_unmetered(ctx, result)  # answered before the chain (400, 403, 404): counted here
        if ctx.trace is not None:
            ctx.trace.result = result
        if event is not None:
            try:
                await self.spend.emit(event)
            except Exception:
                logger.exception("spend event for %s could not be emitted", ctx.request_id)
        if ctx.key.key_id is not None:
            self.last_used.touch(ctx.key.key_id)


proxy_app = Gateway()


def router_health() -> dict[int, dict[str, Any]]:
    """This worker's per-deployment health (cooldowns, latency, in-flight) for admin pages."""
    return proxy_app.router.snapshot() if proxy_app.ready else {}
