"""Limits the key context does not carry: customers (read from the database once and cached), deployment and
group capacity (from the proxy's own registry, handed to the limiters on the request context); exact window
arithmetic."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.proxy.models import ModelGroup
from apps.proxy.registry import load_registry
from apps.ratelimit import lookups
from apps.ratelimit.backends.memory import MemoryBackend
from apps.ratelimit.errors import ProxyRateLimitError
from apps.ratelimit.lookups import CustomerLimits
from apps.teams.models import Customer
from tests.factories import CustomerFactory, DeploymentFactory, OrganizationFactory
from tests.unit.ratelimit_helpers import call, group, key_context, make_chain, ok, request, scope


@pytest.mark.django_db(transaction=True)
async def test_customer_limits_are_read_from_the_customer_row():
    from asgiref.sync import sync_to_async

    org = await sync_to_async(OrganizationFactory)(name="Acme")
    await sync_to_async(CustomerFactory)(
        organization=org, external_id="end-user-1", rpm_limit=7, max_budget=Decimal("2.5"), budget_duration="1d"
    )
    await sync_to_async(CustomerFactory)(organization=org, external_id="no-limits")
    customers = CustomerLimits()
    limits = await customers.limits(org.pk, "end-user-1", "Europe/Berlin")
    customer = await sync_to_async(Customer.objects.get)(organization=org, external_id="end-user-1")
    assert limits.scope == "customer" and limits.id == str(customer.pk)  # the ledger's customer scope id
    assert limits.rpm_limit == 7 and limits.max_budget == Decimal("2.5") and limits.budget_duration == "1d"
    assert limits.time_zone == "Europe/Berlin"
    assert await customers.limits(org.pk, "no-limits") is None
    assert await customers.limits(org.pk, "unknown") is None
    assert await customers.limits(org.pk + 1000, "end-user-1") is None  # another organization's end user
    assert await customers.limits(org.pk, None) is None


@pytest.mark.django_db(transaction=True)
async def test_deployment_and_group_capacity_come_from_the_rows():
    from asgiref.sync import sync_to_async

    first = await sync_to_async(DeploymentFactory)(model_name="cap-model", rpm_limit=60, tpm_limit=1000)
    await sync_to_async(DeploymentFactory)(model_name="cap-model", rpm_limit=40, tpm_limit=None)
    await sync_to_async(DeploymentFactory)(model_name="override", rpm_limit=5)
    await sync_to_async(ModelGroup.objects.create)(model_name="override", rpm_capacity=500, tpm_capacity=9000)
    registry = await sync_to_async(load_registry)()
    capacity = registry.by_id[first.pk]
    assert (capacity.model_name, capacity.rpm_limit, capacity.tpm_limit) == ("cap-model", 60, 1000)
    group = registry.resolve("cap-model")
    # RPM sums over the deployments; TPM is unknown because one deployment declares none.
    assert (group.rpm_capacity, group.tpm_capacity) == (100, None)
    override = registry.resolve("override")
    assert (override.rpm_capacity, override.tpm_capacity) == (500, 9000)
    assert registry.resolve("nobody") is None


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_retry_after_is_the_time_until_the_oldest_request_leaves_the_window():
    clock = Clock(1_000_000.0)
    chain = make_chain(MemoryBackend(clock=clock), ["apps.ratelimit.middleware.RateLimiter"])
    key = key_context(scope("key", rpm_limit=3))
    await call(chain, request(key))  # t = 0
    clock.now += 20
    await call(chain, request(key))  # t = 20
    await call(chain, request(key))  # t = 20
    clock.now += 10  # t = 30: full
    with pytest.raises(ProxyRateLimitError) as info:
        await call(chain, request(key))
    # The t=0 request leaves the exactly-bounded window (60 s + one 1 s bucket) at t=61: 31 s from now.
    assert info.value.retry_after == 31
    clock.now += 30.5  # t = 60.5: not yet
    with pytest.raises(ProxyRateLimitError) as info:
        await call(chain, request(key))
    assert info.value.retry_after == 1
    clock.now += 0.5  # t = 61: the first slot is back, exactly one
    await call(chain, request(key))
    with pytest.raises(ProxyRateLimitError) as info:
        await call(chain, request(key))
    assert info.value.retry_after == 20  # the two t=20 requests leave at t=81


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_a_failing_lookup_follows_the_fail_mode_instead_of_a_500(settings, monkeypatch, mode):
    from apps.ratelimit.errors import LimiterUnavailableError

    settings.RATELIMIT_FAIL_MODE = mode

    def broken(*args):
        raise RuntimeError("database is down")

    monkeypatch.setattr(lookups, "_load_customers", broken)
    customers = CustomerLimits()
    if mode == "open":
        assert await customers.limits(1, "end-user-1") is None
    else:
        with pytest.raises(LimiterUnavailableError):
            await customers.limits(1, "end-user-1")


@pytest.mark.django_db(transaction=True)
async def test_a_new_budget_counter_starts_from_the_ledgers_window_total():
    """Redis lost its counters (or a new worker): the budget is seeded from BudgetWindow, not from zero."""
    from datetime import UTC, datetime

    from asgiref.sync import sync_to_async
    from django.utils import timezone

    from apps.ratelimit.backends.factory import ledger_seeder
    from apps.spend.models import BudgetWindow
    from apps.spend.windows import window_for

    key_scope = scope("key", max_budget="1.00", budget_duration="1d")
    window = window_for("1d", datetime.now(UTC), "UTC")
    await sync_to_async(BudgetWindow.objects.create)(
        scope="key", scope_id=key_scope.id, window_id=window.id, window_start=window.start, window_end=window.end,
        spent=Decimal("0.99"), updated_at=timezone.now(),
    )  # fmt: skip
    chain = make_chain(MemoryBackend(seeder=ledger_seeder()), ["apps.ratelimit.middleware.BudgetLimiter"])
    key = key_context(key_scope)
    with pytest.raises(ProxyRateLimitError) as info:
        await call(chain, request(key, estimated_cost=Decimal("0.02")))
    assert info.value.limit_type == "budget" and info.value.remaining == pytest.approx(0.01)
    await call(chain, request(key, estimated_cost=Decimal("0.005")))


async def test_the_memory_backend_forgets_what_no_window_can_see_any_more():
    clock = Clock(2_000_000.0)
    backend = MemoryBackend(clock=clock)
    chain = make_chain(
        backend, ["apps.ratelimit.middleware.RateLimiter", "apps.ratelimit.middleware.ParallelRequestLimiter"]
    )
    for _ in range(50):  # 50 tenants, one request each
        await call(chain, request(key_context(scope("key", rpm_limit=5, max_parallel_requests=2))))
    assert len(backend.windows) == 50
    clock.now += 120
    for _ in range(1100):  # the sweep runs every 1024 operations
        await call(chain, request(key_context(scope("key", "steady", rpm_limit=10**6))))
    assert set(backend.windows) == {"gw:rl:{o:1}:rpm:key:steady"}
    assert not backend.slots


async def test_token_reconciliation_lands_in_the_reserving_bucket_and_never_resurrects_one():
    clock = Clock(3_000_000.0)
    backend = MemoryBackend(clock=clock)
    chain = make_chain(backend, ["apps.ratelimit.middleware.RateLimiter"])
    key = key_context(scope("key", "tpm-key", tpm_limit=1000))
    slow = request(key, estimated_prompt_tokens=300, max_output_tokens=300)
    await chain.pre_call(slow)
    clock.now += 5  # the call ends five seconds later, having used 100 tokens
    await chain.post_call(slow, ok(prompt_tokens=50, completion_tokens=50))
    assert sum(backend.windows["gw:rl:{o:1}:tpm:key:tpm-key"].values()) == 100
    stale = request(key, estimated_prompt_tokens=500, max_output_tokens=0)
    await chain.pre_call(stale)
    clock.now += 120  # a stream that outlived the window: its bucket is gone, nothing comes back
    await call(chain, request(key, estimated_prompt_tokens=0, max_output_tokens=0))
    await chain.post_call(stale, ok(prompt_tokens=10))
    assert sum(backend.windows["gw:rl:{o:1}:tpm:key:tpm-key"].values()) == 0


@pytest.mark.django_db(transaction=True)
async def test_group_capacity_is_the_shared_deployments_only():
    """An organization's private deployment (here without a limit) neither switches off nor adds to it."""
    from asgiref.sync import sync_to_async

    org, other = await sync_to_async(OrganizationFactory)(), await sync_to_async(OrganizationFactory)()
    await sync_to_async(DeploymentFactory)(model_name="shared-model", rpm_limit=100, tpm_limit=5000)
    await sync_to_async(DeploymentFactory)(model_name="shared-model", rpm_limit=50, tpm_limit=1000)
    private = await sync_to_async(DeploymentFactory)(model_name="shared-model", organization=org, rpm_limit=None)
    await sync_to_async(DeploymentFactory)(model_name="shared-model", organization=other, rpm_limit=10_000)
    await sync_to_async(DeploymentFactory)(model_name="only-private", organization=org, rpm_limit=7)
    registry = await sync_to_async(load_registry)()
    group = registry.resolve("shared-model")  # the shared group, as every organization without its own sees it
    assert (group.rpm_capacity, group.tpm_capacity) == (150, 6000)
    assert registry.resolve("only-private") is None
    assert registry.by_id[private.pk].organization_id is not None


@pytest.mark.django_db(transaction=True)
async def test_priority_tiers_guard_the_shared_capacity_not_private_deployments(settings):
    from asgiref.sync import sync_to_async

    settings.PRIORITY_SATURATION_THRESHOLD = 0.5
    org = await sync_to_async(OrganizationFactory)()
    shared = await sync_to_async(DeploymentFactory)(model_name="tiered", rpm_limit=2)
    private = await sync_to_async(DeploymentFactory)(model_name="tiered", organization=org)
    registry = await sync_to_async(load_registry)()
    # What the proxy puts on the context: the deployment it picked and the group that deployment serves in.
    own = {"deployment": registry.by_id[private.pk], "group": registry.group_of(registry.by_id[private.pk])}
    common = {"deployment": registry.by_id[shared.pk], "group": registry.group_of(registry.by_id[shared.pk])}
    chain = make_chain(MemoryBackend(), ["apps.ratelimit.middleware.PriorityLimiter"])
    low = key_context(priority=0, organization_id=org.pk)  # may fill half of the shared 2 RPM
    for _ in range(5):  # the organization's own deployment: not counted, not tiered
        await call(chain, request(low, model="tiered", deployment_id=private.pk, **own))
    await call(chain, request(low, model="tiered", deployment_id=shared.pk, **common))
    with pytest.raises(ProxyRateLimitError) as info:
        await call(chain, request(low, model="tiered", deployment_id=shared.pk, **common))
    assert "saturated" in info.value.message


@pytest.mark.django_db(transaction=True)
async def test_group_capacity_counts_only_deployments_the_proxy_serves():
    """The limiters read the proxy's own registry: a row it skips (undecryptable credentials) adds no capacity."""
    from asgiref.sync import sync_to_async

    from apps.proxy.models import ModelDeployment

    served = await sync_to_async(DeploymentFactory)(model_name="agreed", rpm_limit=10)
    broken = await sync_to_async(DeploymentFactory)(model_name="agreed", rpm_limit=1000)
    await sync_to_async(ModelDeployment.objects.filter(pk=broken.pk).update)(credentials_encrypted="gAAAA-not-a-token")
    registry = await sync_to_async(load_registry)()
    assert [d.id for d in registry.resolve("agreed").deployments] == [served.pk]
    assert registry.resolve("agreed").rpm_capacity == 10
    assert registry.by_id.get(broken.pk) is None


async def test_without_a_deployment_the_priority_limiter_guards_the_group_the_proxy_resolved(settings):
    """All deployments cooling down: the request is tiered against the resolved group, not the name asked for."""
    settings.PRIORITY_SATURATION_THRESHOLD = 0.5
    chain = make_chain(MemoryBackend(), ["apps.ratelimit.middleware.PriorityLimiter"])
    low = key_context(priority=0)
    # Asked for by its alias "gpt-4"; the proxy resolved the shared group "mock-shared" (capacity 2 RPM).
    resolved = group("mock-shared", rpm_capacity=2)
    await call(chain, request(low, model="gpt-4", group=resolved))
    with pytest.raises(ProxyRateLimitError):
        await call(chain, request(low, model="gpt-4", group=resolved))
    # An organization's private group (no shared group resolved) is not tiered, whatever its name.
    private = group("mock-shared", rpm_capacity=2, shared=False)
    for _ in range(3):
        await call(chain, request(low, model="mock-shared", group=private))
