"""Virtual-key authentication for /v1: keyed-hash lookup into an in-process cache of immutable contexts.

Steady state is a dict lookup: no ORM, no thread hop. On a miss the context is built from the
VirtualKey, user, team and organization rows on the proxy's database thread; concurrent misses for
the same key share one load. Caches are cleared through ``clear()`` by ``apps.proxy.cache_sync``
when anything that shapes a context changes, and entries expire after AUTH_CACHE_TTL_SECONDS anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from typing import Any

from django.db import DatabaseError

from apps.common.intervallog import IntervalLog
from apps.guardrails.selectors import policy_for_key
from apps.keys.hashing import KEY_PREFIX, keyed_hash
from apps.keys.models import VirtualKey
from apps.proxy.auth_guard import AuthMissGuard, client_address
from apps.proxy.context import KeyContext, ScopeLimits
from apps.proxy.errors import GatewayError, unauthorized
from apps.proxy.selectors import key_allowed_models
from apps.ratelimit import metrics
from apps.ratelimit.errors import ProxyRateLimitError

logger = logging.getLogger(__name__)

NEGATIVE_TTL_SECONDS = 5.0
MAX_ENTRIES = 100_000
# Refused tokens are remembered apart: a flood of random keys fills (and empties) only this table,
# never evicting the contexts of working keys.
MAX_NEGATIVE_ENTRIES = 20_000

MASTER_CONTEXT = KeyContext(
    key_id=None,
    key_alias="master-key",
    team_id=None,
    team_name="",
    organization_id=None,
    organization_name="",
    user_id=None,
    allowed_models=None,
    scopes=(),
    is_master=True,
)


def bearer_token(headers: dict[bytes, bytes]) -> str | None:
    """The client's key from ``Authorization: Bearer``, ``x-api-key`` or ``api-key`` (Azure style)."""
    raw = headers.get(b"authorization")
    if raw:
        if raw[:7].lower() == b"bearer ":
            token = raw[7:].strip()
            return token.decode("latin-1") if token else None
        return None
    raw = headers.get(b"x-api-key") or headers.get(b"api-key")
    return raw.strip().decode("latin-1") if raw else None


def _limits(scope: str, scope_id: str, row: Any, *, time_zone: str, model: str | None = None) -> ScopeLimits:
    get = row.get if isinstance(row, dict) else lambda name, default=None: getattr(row, name, default)
    budget = get("max_budget")
    soft = get("soft_budget")
    return ScopeLimits(
        scope=scope,
        id=scope_id,
        rpm_limit=get("rpm_limit"),
        tpm_limit=get("tpm_limit"),
        max_parallel_requests=get("max_parallel_requests"),
        max_budget=Decimal(str(budget)) if budget is not None else None,
        soft_budget=Decimal(str(soft)) if soft is not None else None,
        budget_duration=get("budget_duration", "") or "",
        time_zone=time_zone,
        model=model,
    )


def _model_limits(owner: str, owner_id: int, table: dict, time_zone: str) -> dict[str, ScopeLimits]:
    limits = {}
    for model, values in (table or {}).items():
        if isinstance(values, dict):
            limits[model] = _limits("model", f"{owner}:{owner_id}:{model}", values, time_zone=time_zone, model=model)
    return limits


def load_key_context(key_hash: str) -> KeyContext | None:
    """Build the context for an active key, or None (unknown, revoked, blocked, expired). Synchronous."""
    key = (
        VirtualKey.objects.select_related("team", "organization", "user")
        .filter(key_hash=key_hash, revoked_at__isnull=True)
        .first()
    )
    if key is None or key.blocked or key.team.blocked or key.organization.blocked:
        return None
    if key.user is not None and not key.user.is_active:
        return None  # a deactivated person's keys stop with them
    expires_at = key.expires_at.timestamp() if key.expires_at else None
    if expires_at is not None and expires_at <= time.time():
        return None
    org, team, user = key.organization, key.team, key.user
    tz = org.time_zone or "UTC"
    scopes = [_limits("key", str(key.pk), key, time_zone=tz)]
    if user is not None:
        scopes.append(_limits("user", str(user.pk), user, time_zone=tz))
    scopes.append(_limits("team", str(team.pk), team, time_zone=tz))
    scopes.append(_limits("organization", str(org.pk), org, time_zone=tz))
    return KeyContext(
        key_id=key.pk,
        key_alias=key.alias or key.prefix,
        team_id=team.pk,
        team_name=team.name,
        organization_id=org.pk,
        organization_name=org.name,
        user_id=user.pk if user else None,
        allowed_models=key_allowed_models(key),
        scopes=tuple(scopes),
        key_model_limits=_model_limits("key", key.pk, key.model_limits, tz),
        team_model_limits=_model_limits("team", team.pk, team.model_limits, tz),
        priority=key.priority,
        session_max_budget=key.session_max_budget or team.session_max_budget,
        session_max_iterations=key.session_max_iterations or team.session_max_iterations,
        budget_clamp_max_tokens=key.budget_clamp_max_tokens or team.budget_clamp_max_tokens,
        trace_content=team.trace_content,
        cache_ttl=key.cache_ttl_seconds if key.cache_ttl_seconds is not None else team.cache_ttl_seconds or 0,
        metadata=dict(key.metadata or {}),
        guardrails=policy_for_key(key_id=key.pk, team_id=team.pk, organization_id=org.pk),
        time_zone=tz,
        expires_at=expires_at,
    )


class AuthCache:
    """presented key -> (KeyContext, expiry); refused keys -> expiry of the short-lived negative answer.

    Both bounded (then cleared), so a flood of random keys costs memory only briefly, and separate,
    so that flood never pushes working keys out of the cache.
    """

    def __init__(
        self,
        *,
        ttl: float,
        master_key: str,
        run_sync: Callable,
        loader: Callable = load_key_context,
        log_interval: float = 10.0,
        guard: AuthMissGuard | None = None,
        trusted_proxies: int = 0,
        legacy_upgrade: Callable | None = None,
    ):
        self.ttl = ttl
        # A database outage fails every uncached key's lookup: one line (with the first traceback) per
        # interval and a count, not a traceback per request.
        self._failures = IntervalLog(logger, interval=log_interval)
        self.master_key = master_key
        self._run_sync = run_sync
        self._loader = loader
        # Keys imported from LiteLLM (keys.services.key_legacy_upgrade): tried once for a foreign-looking
        # secret the loader does not know, then the loader again. None: no legacy verifiers.
        self._legacy_upgrade = legacy_upgrade
        # Per-source limits on lookups of keys the cache does not hold (apps/proxy/auth_guard.py).
        self.guard = guard
        self.trusted_proxies = trusted_proxies
        self._entries: dict[str, tuple[KeyContext | None, float]] = {}
        self._negative: dict[str, float] = {}
        self._loading: dict[str, asyncio.Future] = {}
        self._refreshing: set[asyncio.Task] = set()
        self.generation = 0

    def clear(self) -> None:
        self.generation += 1
        self._entries = {}
        self._negative = {}

    async def authenticate(
        self, token: str | None, client: tuple | list | None = None, forwarded_for: bytes | None = None
    ) -> KeyContext:
        """The key's context; ``client`` (the ASGI peer) and ``forwarded_for`` name the source of a miss."""
        if not token:
            raise unauthorized()
        if self.master_key and hmac.compare_digest(token.encode(), self.master_key.encode()):
            return MASTER_CONTEXT
        # Entries are found by the presented secret itself (a dict compares whole strings), so the steady
        # state skips the HMAC; the database is only ever asked by the keyed hash.
        now = time.monotonic()
        entry = self._entries.get(token)
        if entry is not None and entry[1] <= now:
            if now < entry[1] + self.ttl:
                # Past its TTL but within one more: answer from it and reload in the background, so a
                # working key never waits on the database (nor behind a flood of unknown keys' lookups).
                # Admin changes don't wait for this: they clear the cache through the invalidation channel.
                self._refresh_in_background(token)
            else:
                entry = None
        if entry is None:
            if self._negative.get(token, 0.0) > now:
                raise unauthorized()
            if self.guard is None or token in self._loading:  # (joining a lookup in progress costs nothing)
                entry = await self._load(token)
            else:
                entry = await self._guarded_load(token, client_address(client, forwarded_for, self.trusted_proxies))
        ctx = entry[0]
        if ctx is None or (ctx.expires_at is not None and ctx.expires_at <= time.time()):
            raise unauthorized()
        return ctx

    async def _guarded_load(self, token: str, source: str) -> tuple[KeyContext | None, float]:
        guard = self.guard
        assert guard is not None
        found = False
        try:
            async with guard.lookup(source):
                # Charged once the source's earlier lookups are done: their working keys gave their
                # tokens back, so only misses count, however many new keys arrive at once.
                try:
                    guard.charge(source)  # past the source's misses: a 429 before any database work
                except ProxyRateLimitError:
                    metrics.auth_lookup("source_limited")
                    raise
                entry = await self._load(token)
            found = entry[0] is not None
            metrics.auth_lookup("found" if found else "unknown")
            return entry
        except GatewayError:
            found = True  # the database failed, not the client: no miss
            metrics.auth_lookup("error")
            raise
        finally:
            if found:
                guard.refund(source)

    def known(self, token: str | None) -> KeyContext | None:
        """The context this worker last built for ``token``, expired or not, without any lookup.

        For overload shedding, which needs the key's priority before it decides to spend a database
        lookup on it; never an authentication answer.
        """
        if not token:
            return None
        if self.master_key and hmac.compare_digest(token.encode(), self.master_key.encode()):
            return MASTER_CONTEXT
        entry = self._entries.get(token)
        return entry[0] if entry is not None else None

    def _refresh_in_background(self, token: str) -> None:
        if token in self._loading:
            return

        async def refresh() -> None:
            # The database down: the stale entry serves until its grace ends (_load logs the failure).
            with contextlib.suppress(GatewayError):
                await self._load(token)

        task = asyncio.get_running_loop().create_task(refresh())
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    async def _load(self, token: str) -> tuple[KeyContext | None, float]:
        pending = self._loading.get(token)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._loading[token] = future
        generation = self.generation
        try:
            try:
                ctx = await self._run_sync(self._loader, keyed_hash(token))
                if ctx is None and self._legacy_upgrade is not None and not token.startswith(KEY_PREFIX):
                    upgraded = await self._run_sync(partial(self._legacy_upgrade, secret=token))
                    ctx = await self._run_sync(self._loader, keyed_hash(token)) if upgraded else None
            except DatabaseError as exc:
                self._failures.event(
                    f"lookup:{type(exc).__name__}",
                    f"key lookup failed: the database did not answer ({type(exc).__name__}); answering 503",
                    level=logging.ERROR,
                    exc_info=True,
                )
                raise GatewayError(
                    503,
                    "Keys cannot be checked right now; retry shortly.",
                    headers={"retry-after": "1"},
                    kind="auth_store_unavailable",
                ) from None
            entry = (ctx, time.monotonic() + (self.ttl if ctx is not None else min(self.ttl, NEGATIVE_TTL_SECONDS)))
            # A clear() while we were loading means the row may have changed: use it once, don't cache it.
            if generation == self.generation:
                if ctx is None:
                    self._entries.pop(token, None)  # a stale answer must not outlive a refusal
                    if len(self._negative) >= MAX_NEGATIVE_ENTRIES:
                        self._negative = {}
                    self._negative[token] = entry[1]
                else:
                    if len(self._entries) >= MAX_ENTRIES:
                        self._entries = {}
                    self._entries[token] = entry
            future.set_result(entry)
            return entry
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._loading.pop(token, None)
