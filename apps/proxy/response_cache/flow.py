"""The response cache in a /v1 request: decide, look up, answer a hit, keep a fresh answer.

A key or its team opts in with a TTL (``KeyContext.cache_ttl``). For a cacheable route the flow in
``apps.proxy.endpoints.model_call`` asks ``plan`` (after the model resolved, before the limiters),
``lookup`` (one store round trip), and on a hit ``answer`` (no upstream call; cost 0 with the cost it
saved in the ledger). On a miss the fresh answer is kept before it is sent (``keep``), or, for a stream,
assembled while it is relayed and kept before its last event (``StreamKeeper``), so a client that sends
the same request right after the answer arrives finds the entry.

Every cacheable request carries ``x-gateway-cache``: ``hit``, ``miss`` (also with ``no-cache`` and when the
store failed), or ``bypass`` (caching off for the key, or ``no-store``); other routes carry none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from prometheus_client import Counter

from apps.proxy.asgi_io import SSE_HEADERS, encode_headers, send_response
from apps.proxy.context import CallResult, RequestContext
from apps.proxy.providers.base import Chunk, Usage
from apps.proxy.response_cache.entries import Entry, StreamAssembler, replay_stream
from apps.proxy.response_cache.keys import CACHEABLE_OPS, cache_key, directives
from apps.proxy.response_cache.store import CacheStore, MemoryStore, RedisStore

if TYPE_CHECKING:
    from apps.proxy.registry import Group

logger = logging.getLogger(__name__)

HEADER = "x-gateway-cache"
CACHE_DEPLOYMENT = "cache"  # the x-gateway-deployment of a hit: no deployment served it
STREAM_OPS = frozenset({"chat", "completions"})
LOOKUPS = Counter(
    "gateway_cache_lookups",
    "Cacheable /v1 requests by response-cache outcome: hit, miss, bypass (off for the key, or no-store), "
    "error (the store failed; answered as a miss).",
    ["route", "result"],
)
# Label children by (route, result): three routes by four results, looked up once each (process-wide, like the
# Prometheus registry itself; see docs/architecture.md).
_LOOKUP_CHILDREN: dict[tuple[str, str], Any] = {}


def _counted(route: str, result: str) -> None:
    child = _LOOKUP_CHILDREN.get((route, result))
    if child is None:
        child = _LOOKUP_CHILDREN[route, result] = LOOKUPS.labels(route, result)
    child.inc()


@dataclass(slots=True)
class CachePlan:
    """What the cache does for one request."""

    key: str
    ttl: int
    read: bool  # look up (not with no-cache)
    write: bool  # keep the fresh answer (not with no-store)
    op: str
    stream: bool
    include_usage: bool


@dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry
    body: bytes  # what the client gets: the stored JSON, or its SSE replay
    stream: bool


class ResponseCache:
    def __init__(self, store: CacheStore, *, max_entry_bytes: int) -> None:
        self.store = store
        self.max_entry_bytes = max_entry_bytes

    @classmethod
    def from_settings(cls) -> ResponseCache:
        backend = settings.PROXY_CACHE_BACKEND
        target = settings.REDIS_TARGET
        store: CacheStore
        if backend == "redis" or (backend == "auto" and target is not None):
            if target is None:
                raise ImproperlyConfigured("PROXY_CACHE_BACKEND=redis needs REDIS_URL (or the sentinels, or a cluster)")
            store = RedisStore(
                target,
                timeout_seconds=settings.PROXY_CACHE_REDIS_TIMEOUT_MS / 1000,
                log_interval=settings.LOG_EVENT_INTERVAL_SECONDS,
            )
        else:
            store = MemoryStore(settings.PROXY_CACHE_MEMORY_MAX_BYTES)
        return cls(store, max_entry_bytes=settings.PROXY_CACHE_MAX_ENTRY_BYTES)

    async def close(self) -> None:
        await self.store.close()

    def plan(
        self, ctx: RequestContext, op: str, body: dict[str, Any], headers: dict[bytes, bytes], group: Group
    ) -> CachePlan | None:
        """The plan for a request of a cacheable route, None otherwise (or when the cache is off for it).

        Takes the LiteLLM-style ``cache`` object out of ``body``: it is for the gateway, not the upstream.
        """
        if op not in CACHEABLE_OPS:
            return None
        read, write = directives(headers, body)
        if isinstance(body.get("cache"), dict):
            del body["cache"]
        if ctx.key.cache_ttl <= 0 or not write:
            ctx.response_headers[HEADER] = "bypass"
            _counted(ctx.route, "bypass")
            return None
        ctx.response_headers[HEADER] = "miss"
        return CachePlan(
            key=cache_key(organization_id=ctx.key.organization_id, op=op, model_group=group.model_name, body=body),
            ttl=ctx.key.cache_ttl,
            read=read,
            write=write,
            op=op,
            stream=ctx.stream and op in STREAM_OPS,
            include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        )

    async def lookup(self, plan: CachePlan, route: str) -> Hit | None:
        """The hit for ``plan`` in the shape its client asked for, or None (a miss, counted)."""
        if not plan.read:
            _counted(route, "miss")
            return None
        raw, answered = await self.store.get(plan.key)
        entry = Entry.decode(raw) if raw is not None else None
        hit = None
        if entry is not None:
            body = replay_stream(plan.op, entry.body, plan.include_usage) if plan.stream else entry.body
            hit = Hit(entry, body, plan.stream) if body is not None else None
        _counted(route, "hit" if hit is not None else "miss" if answered else "error")
        return hit

    async def answer(
        self, ctx: RequestContext, hit: Hit, send: Any, common_headers: list[tuple[bytes, bytes]]
    ) -> CallResult:
        """Send the hit (``common_headers``: the gateway's, with cost 0 and ``CACHE_DEPLOYMENT``); the result
        the ledger records: cost 0, no deployment, the cost it saved."""
        ctx.response_headers[HEADER] = "hit"
        headers = common_headers + encode_headers(ctx.response_headers)
        if hit.stream:
            await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})
            await send({"type": "http.response.body", "body": hit.body, "more_body": False})
        else:
            await send_response(send, 200, hit.body, headers)
        return CallResult(status=200, cache_hit=True, cost_saved=hit.entry.cost)

    async def keep(self, plan: CachePlan, body: bytes, result: CallResult) -> None:
        """Store a fresh whole answer (a 200) for ``plan.ttl`` seconds, unless it is larger than allowed."""
        if not plan.write or len(body) > self.max_entry_bytes:
            return
        entry = Entry(body, result.cost, result.prompt_tokens, result.completion_tokens)
        await self.store.set(plan.key, entry.encode(), plan.ttl)

    def stream_keeper(self, plan: CachePlan, price: Callable[[Usage], Decimal], usage: Usage) -> StreamKeeper | None:
        return StreamKeeper(self, plan, price, usage) if plan.write and plan.op in STREAM_OPS else None


class StreamKeeper:
    """Fed every chunk a stream relays (``apps.proxy.relay.relay_stream``); ``finish`` runs once the upstream
    ended the stream normally, before the client gets its last event, and keeps the assembled answer.

    ``usage`` is the stream's (complete when ``finish`` runs); ``price`` turns it into the answer's cost.
    """

    def __init__(self, cache: ResponseCache, plan: CachePlan, price: Callable[[Usage], Decimal], usage: Usage):
        self.cache = cache
        self.plan = plan
        self.price = price
        self.usage = usage
        self.assembler = StreamAssembler(plan.op, cache.max_entry_bytes)

    def add(self, item: Any) -> None:
        if isinstance(item, Chunk):
            self.assembler.add(item.obj)

    async def finish(self) -> None:
        try:
            usage = self.usage
            counts = {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            }
            body = self.assembler.result(counts) if usage.reported else None  # unpriced answers are not kept
            if body is None:
                return
            result = CallResult(
                status=200, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens
            )
            result.cost = self.price(usage)
            await self.cache.keep(self.plan, body, result)
        except Exception:  # the answer is still relayed; only the cache misses it
            logger.exception("response cache: a streamed answer could not be kept")
