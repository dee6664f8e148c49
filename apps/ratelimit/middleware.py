"""The limiter middleware classes named in ``settings.PROXY_MIDDLEWARE``.

Each limiter's ``pre_call`` only adds checks to the request's plan (``apps/ratelimit/plan.py``); the chain
reserves the whole plan in one atomic backend call once every limiter has spoken, and settles it once in
``post_call``. So the classes stay independent and configurable (drop one from the list to disable it),
yet a request costs one Redis round trip before the call and one after.

Limits come from the key context (key, user, team, organization, per-model), the Customer table
(end user, ``lookups.py``) and the deployment and model group the proxy routed to (``ctx.deployment``,
``ctx.group``, from its registry), all edited in the admin.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import lru_cache

from django.conf import settings

from apps.proxy.context import CallResult, RequestContext, ScopeLimits
from apps.ratelimit import observe
from apps.ratelimit.chain import ProxyMiddleware
from apps.ratelimit.plan import COUNTER, SLOTS, WINDOW, Check, counter_key, usd_to_nano
from apps.ratelimit.scopes import model_scopes, scope_label, tenant_scopes, token_estimate
from apps.ratelimit.state import plan_for
from apps.spend.windows import DURATIONS, Window, lifetime_window, window_for

BATCH_ROUTE = "/v1/batches"
_MAX_BUDGET_RETRY_MS = 30 * 86_400_000


class MetricsMiddleware(ProxyMiddleware):
    """First in the list so its post_call sees every request, refused ones included."""

    async def pre_call(self, ctx: RequestContext) -> None:
        observe.request_started(ctx)

    async def post_call(self, ctx: RequestContext, result: CallResult) -> None:
        observe.request_finished(ctx, result)


class BatchLimiter(ProxyMiddleware):
    """``POST /v1/batches`` charges the input file's request count (and its token estimate) up front."""

    async def pre_call(self, ctx: RequestContext) -> None:
        if ctx.route.startswith(BATCH_ROUTE):
            plan = plan_for(ctx)
            plan.units = max(1, int(ctx.request_units))
            plan.keep_charges = True


class ParallelRequestLimiter(ProxyMiddleware):
    """Concurrency slots per key, user, team (and organization/customer when set).

    A slot is released in post_call on every outcome. It is a lease of ``RATELIMIT_SLOT_TTL_SECONDS`` that
    the worker renews while the request runs, so a slot whose worker died comes back within one lease.
    """

    async def pre_call(self, ctx: RequestContext) -> None:
        if uncounted_hit(ctx):
            return
        if ctx.slot_held:
            return  # a realtime response: its session holds the slot
        plan = plan_for(ctx)
        for scope in await tenant_scopes(ctx):
            if scope.max_parallel_requests is None:
                continue
            ttl_ms = int(settings.RATELIMIT_SLOT_TTL_SECONDS * 1000)
            plan.add(
                Check(SLOTS, _key(ctx, "par", scope), scope.max_parallel_requests, 1, "concurrent_requests",
                      scope.scope, scope_label(ctx, scope), ttl_ms=ttl_ms, member=ctx.request_id, reconcile="slot")
            )  # fmt: skip


class RateLimiter(ProxyMiddleware):
    """RPM and TPM per key, user, team, organization, customer, model-per-key and model-per-team."""

    async def pre_call(self, ctx: RequestContext) -> None:
        if uncounted_hit(ctx):
            return
        plan = plan_for(ctx)
        scopes = await tenant_scopes(ctx) + model_scopes(ctx)
        tokens = token_estimate(ctx)
        for scope in scopes:
            if scope.rpm_limit is None and scope.tpm_limit is None:
                continue
            label = scope_label(ctx, scope)
            if scope.rpm_limit is not None:
                plan.add(
                    Check(WINDOW, _key(ctx, "rpm", scope), scope.rpm_limit, plan.units, "requests", scope.scope, label)
                )
            if scope.tpm_limit is not None and not ctx.cache_hit:  # a cache hit uses no tokens
                plan.add(
                    Check(WINDOW, _key(ctx, "tpm", scope), scope.tpm_limit, tokens, "tokens", scope.scope, label,
                          reconcile="tokens")
                )  # fmt: skip


class DeploymentCapacityLimiter(ProxyMiddleware):
    """The deployment's own RPM/TPM/parallel capacity (its provider's quota), shared by every tenant.

    The deployment is the one the proxy picked for this request (``ctx.deployment``, from its registry).
    """

    async def pre_call(self, ctx: RequestContext) -> None:
        dep = ctx.deployment
        if dep is None or ctx.cache_hit:  # a cache hit never reaches the deployment
            return
        plan = plan_for(ctx)
        label = f"deployment capacity of model '{ctx.model}'"
        base = f"dep:{dep.id}"
        # A private deployment serves one organization: its capacity joins that organization's slot.
        tag = f"o:{dep.organization_id}" if dep.organization_id is not None else f"d:{dep.id}"
        if dep.rpm_limit is not None:
            plan.add(Check(WINDOW, _raw_key(tag, "rpm", base), dep.rpm_limit, plan.units, "requests", "model", label))
        if dep.tpm_limit is not None:
            plan.add(
                Check(WINDOW, _raw_key(tag, "tpm", base), dep.tpm_limit, token_estimate(ctx), "tokens", "model", label,
                      reconcile="tokens")
            )  # fmt: skip
        if dep.max_parallel_requests is not None and not ctx.slot_held:
            plan.add(
                Check(SLOTS, _raw_key(tag, "par", base), dep.max_parallel_requests, 1, "concurrent_requests", "model",
                      label, ttl_ms=int(settings.RATELIMIT_SLOT_TTL_SECONDS * 1000), member=ctx.request_id,
                      reconcile="slot")
            )  # fmt: skip


def priority_tier(priority: int, threshold: float) -> float:
    """Share of a saturated group's capacity a priority may fill.

    Up to ``threshold`` everyone is served; above it priority 0 is refused first, priority p may go up to
    ``threshold + (1 - threshold) * p / (p + 1)``: each step up gets a share of the remaining headroom.
    """
    p = max(0, int(priority))
    t = min(max(threshold, 0.0), 1.0)
    return t + (1.0 - t) * p / (p + 1)


class PriorityLimiter(ProxyMiddleware):
    """Dynamic sharing of a model group's capacity when its saturation passes the threshold.

    Saturation is max(RPM use / RPM capacity, TPM use / TPM capacity) over the group's sliding minute.
    Every admitted request to the group is counted in the group's RPM/TPM windows; a request is admitted
    only while the group's use, with it, stays within its priority's tier of the capacity. Refused
    requests charge nothing, so low-priority traffic backs off without eating the headroom.
    The capacity is the shared group's (``Group.rpm_capacity``/``tpm_capacity``: the ``ModelGroup`` row's, else
    the sum over its deployments), read from the group the proxy resolved (``ctx.group``); traffic to an
    organization's private deployment or group is neither counted nor tiered here.
    """

    async def pre_call(self, ctx: RequestContext) -> None:
        dep = ctx.deployment
        if ctx.cache_hit or (dep is not None and dep.organization_id is not None):
            # A cache hit draws on no capacity; nor does an organization's private deployment.
            return
        # Without a deployment yet (all cooling down, or served by a fallback) the group is still the one the
        # proxy resolved for this organization, never the raw name asked for (an alias, or a name that
        # another organization's private deployment also carries).
        group = ctx.group
        if group is None or not group.shared or (group.rpm_capacity is None and group.tpm_capacity is None):
            return
        plan = plan_for(ctx)
        tier = priority_tier(ctx.key.priority, settings.PRIORITY_SATURATION_THRESHOLD)
        label = f"priority {ctx.key.priority}"
        tokens = token_estimate(ctx)
        for kind, cap, amount in (("rpm", group.rpm_capacity, plan.units), ("tpm", group.tpm_capacity, tokens)):
            if cap is None:
                continue
            digest = _digest(group.model_name)
            key = _raw_key(f"g:{digest}", kind, f"grp:{digest}")
            limit_type = "requests" if kind == "rpm" else "tokens"
            # One counter per group: checked against this priority's tier, charged when admitted.
            plan.add(
                Check(WINDOW, key, int(cap * tier) if tier < 1.0 else None, amount, limit_type, "model", label,
                      reconcile="tokens" if kind == "tpm" else None, priority_tier=True)
            )  # fmt: skip


class BudgetLimiter(ProxyMiddleware):
    """Reserves the estimated cost against every budget up the chain, in each scope's current window."""

    async def pre_call(self, ctx: RequestContext) -> None:
        if ctx.cache_hit:  # costs 0: nothing to reserve (an exhausted budget does not refuse a free answer)
            return
        budgeted = [scope for scope in await tenant_scopes(ctx) + model_scopes(ctx) if scope.max_budget is not None]
        if not budgeted:
            return
        plan = plan_for(ctx)
        now = datetime.now(UTC)
        # At least one nano-USD, so an exhausted budget refuses even a call estimated as free.
        amount = max(1, usd_to_nano(ctx.estimated_cost))
        for scope in budgeted:
            window = budget_window(scope.budget_duration, now, scope.time_zone or ctx.key.time_zone)
            if window.id != "all":
                left_ms = int(window.seconds_left(now) * 1000)
                ttl_ms = left_ms + 86_400_000
            else:
                left_ms, ttl_ms = _MAX_BUDGET_RETRY_MS, 0
            plan.add(
                Check(COUNTER, _key(ctx, "budget", scope, window.id), usd_to_nano(scope.max_budget), amount, "budget",
                      scope.scope, scope_label(ctx, scope), ttl_ms=ttl_ms, retry_ms=min(left_ms, _MAX_BUDGET_RETRY_MS),
                      reconcile="cost", seed=(scope.scope, str(scope.id), window.id), unit="nano_usd")
            )  # fmt: skip


_windows: dict[tuple[str, str], Window] = {}


def budget_window(duration: str, now: datetime, time_zone: str) -> Window:
    """The window a budget charges now; the same choice the spend ledger makes (apps/spend/scopes.py).

    Remembered until it ends: every request of the hour/day/month asks for the same window.
    """
    if duration not in DURATIONS:
        return lifetime_window()
    cached = _windows.get((duration, time_zone))
    if cached is not None and cached.start <= now < cached.end:
        return cached
    try:
        window = window_for(duration, now, time_zone)
    except (KeyError, ValueError):  # unknown time zone name: count in UTC rather than not at all
        window = window_for(duration, now, "UTC")
    if len(_windows) > 4096:
        _windows.clear()
    _windows[(duration, time_zone)] = window
    return window


class SessionLimiter(ProxyMiddleware):
    """Per-session budget and iteration cap for agent loops (caps from the key, or its team)."""

    async def pre_call(self, ctx: RequestContext) -> None:
        key = ctx.key
        if not ctx.session_id or (key.session_max_iterations is None and key.session_max_budget is None):
            return
        if uncounted_hit(ctx):
            return
        plan = plan_for(ctx)
        ttl_ms = int(settings.RATELIMIT_SESSION_TTL_SECONDS * 1000)
        base = f"sess:{key.key_id or 'master'}:{_digest(ctx.session_id)}"
        tag = _org_tag(ctx)
        label = "this session"
        if key.session_max_iterations is not None:
            plan.add(
                Check(COUNTER, _raw_key(tag, "iter", base), key.session_max_iterations, 1, "max_iterations", "session",
                      label, ttl_ms=ttl_ms)
            )  # fmt: skip
        if key.session_max_budget is not None and not ctx.cache_hit:  # a cache hit costs 0
            plan.add(
                Check(COUNTER, _raw_key(tag, "cost", base), usd_to_nano(key.session_max_budget),
                      max(1, usd_to_nano(ctx.estimated_cost)), "budget", "session", label, ttl_ms=ttl_ms,
                      reconcile="cost")
            )  # fmt: skip


def uncounted_hit(ctx: RequestContext) -> bool:
    """A response-cache hit that counts against no limit (``PROXY_CACHE_HITS_COUNT_AGAINST_LIMITS=none``).

    With the default ("requests") a hit still counts as a request (RPM, parallel slots, session iterations);
    tokens, budgets and deployment capacity never count hits (the limiters below skip ``ctx.cache_hit``).
    Either way the chain runs, so a blocked end user is refused a cached answer too.
    """
    return ctx.cache_hit and settings.PROXY_CACHE_HITS_COUNT_AGAINST_LIMITS == "none"


def _digest(text: str) -> str:
    """Client-supplied names are hashed into counter keys: bounded length, no injection into key names."""
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _org_tag(ctx: RequestContext) -> str:
    return f"o:{ctx.key.organization_id or '-'}"


def _key(ctx: RequestContext, kind: str, scope: ScopeLimits, *suffix: str) -> str:
    """A tenant scope's counter, in its organization's cluster slot; a user's in its own (a user may
    belong to several organizations, and its limit spans all of them)."""
    tag = f"u:{scope.id}" if scope.scope == "user" else _org_tag(ctx)
    return _scope_key(tag, kind, scope.scope, scope.id, *suffix)


@lru_cache(maxsize=65_536)
def _scope_key(tag: str, kind: str, scope: str, scope_id: str, *suffix: str) -> str:
    """Counter names repeat for every request of a tenant: built once."""
    # Model and customer ids contain client-chosen names: hashed so counter keys stay short and clean.
    if scope in ("model", "customer"):
        scope_id = _digest(scope_id)
    return counter_key(tag, kind, scope, scope_id, *suffix)


@lru_cache(maxsize=65_536)
def _raw_key(tag: str, kind: str, base: str) -> str:
    return counter_key(tag, kind, base)
