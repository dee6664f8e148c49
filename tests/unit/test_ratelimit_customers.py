"""End users (the request's ``user`` field) against the Customer table: blocks, limits, budget windows.

Real database rows and the real lookups (``CustomerLimits``, nothing monkeypatched), on the memory backend and
on the real Redis of the test run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from apps.proxy.errors import GatewayError
from apps.ratelimit import lookups
from apps.ratelimit.errors import ProxyRateLimitError
from apps.ratelimit.lookups import CustomerLimits
from apps.teams.models import Customer
from tests.factories import CustomerFactory, OrganizationFactory
from tests.unit.ratelimit_helpers import ALL, BACKENDS, call, key_context, make_backend, make_chain, request, scope

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def long_ttl(settings):
    settings.AUTH_CACHE_TTL_SECONDS = 3600  # only an invalidation may refresh a snapshot in these tests


async def blocked(chain, ctx) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await call(chain, ctx)
    return info.value


@pytest.mark.parametrize("backend_kind", BACKENDS)
@pytest.mark.parametrize("paths", [ALL, ["apps.ratelimit.middleware.MetricsMiddleware"]], ids=["all", "no-limiter"])
async def test_a_blocked_customer_is_refused_with_403_and_charges_nothing(backend_kind, paths):
    org = await sync_to_async(OrganizationFactory)()
    await sync_to_async(CustomerFactory)(organization=org, external_id="banned", blocked=True)
    await sync_to_async(CustomerFactory)(organization=org, external_id="limited", rpm_limit=5)
    chain = make_chain(make_backend(backend_kind), paths)
    key = key_context(scope("key", rpm_limit=1), organization_id=org.pk)
    for _ in range(3):
        error = await blocked(chain, request(key, customer_id="banned"))
        assert error.status == 403
        assert error.to_body()["error"] == {
            "message": "The end user 'banned' is blocked by this organization.",
            "type": "permission_error",
            "param": "user",
            "code": "customer_blocked",
        }
    # The refusals took nothing from the key's one request a minute; other end users are served.
    await call(chain, request(key, customer_id="limited"))
    # The same external id in another organization is someone else.
    other = key_context(organization_id=org.pk + 1000)
    await call(chain, request(other, customer_id="banned"))


async def test_a_block_applies_from_the_first_request_after_the_invalidation():
    org = await sync_to_async(OrganizationFactory)()
    customer = await sync_to_async(CustomerFactory)(organization=org, external_id="soon-banned")
    chain = make_chain(make_backend("memory"))
    key = key_context(organization_id=org.pk)
    await call(chain, request(key, customer_id="soon-banned"))
    await sync_to_async(Customer.objects.filter(pk=customer.pk).update)(blocked=True)
    chain.invalidate()  # what Gateway.invalidate does when it hears of the admin change
    error = await blocked(chain, request(key, customer_id="soon-banned"))
    assert (error.status, error.code) == (403, "customer_blocked")
    await sync_to_async(Customer.objects.filter(pk=customer.pk).update)(blocked=False)
    chain.invalidate()
    await call(chain, request(key, customer_id="soon-banned"))


@pytest.fixture
def customer_queries(monkeypatch):
    """Counts SQL statements touching the Customer table, in whichever thread runs them."""
    from django.db.backends import utils

    seen: list[str] = []
    original = utils.CursorWrapper._execute_with_wrappers

    def counting(self, sql, *args, **kwargs):
        if Customer._meta.db_table in sql:
            seen.append(sql)
        return original(self, sql, *args, **kwargs)

    monkeypatch.setattr(utils.CursorWrapper, "_execute_with_wrappers", counting)
    return seen


async def test_new_end_user_ids_cost_no_database_query(customer_queries):
    org = await sync_to_async(OrganizationFactory)()
    await sync_to_async(CustomerFactory)(organization=org, external_id="vip", rpm_limit=1)
    await sync_to_async(CustomerFactory)(organization=org, external_id="plain")  # no limits: not loaded
    chain = make_chain(make_backend("memory"), ["apps.ratelimit.middleware.RateLimiter"])
    key = key_context(organization_id=org.pk)
    customer_queries.clear()  # the rows written above
    await call(chain, request(key, customer_id="vip"))
    for n in range(300):  # client-chosen ids, every one new
        assert await chain.customers.limits(org.pk, f"random-{n}", "UTC") is None
        await call(chain, request(key, customer_id=f"random-{n}"))
    assert await chain.customers.limits(org.pk, "plain", "UTC") is None
    assert len(customer_queries) == 1, customer_queries  # the organization's snapshot, once
    with pytest.raises(ProxyRateLimitError) as info:
        await call(chain, request(key, customer_id="vip"))
    assert info.value.scope == "customer"


async def test_a_newly_limited_customer_is_enforced_after_the_invalidation():
    from apps.teams.audit import Actor
    from apps.teams.services import customer_upsert
    from tests.factories import UserFactory

    org = await sync_to_async(OrganizationFactory)()
    root = await sync_to_async(UserFactory)(is_superuser=True)
    chain = make_chain(make_backend("memory"), ["apps.ratelimit.middleware.RateLimiter"])
    key = key_context(organization_id=org.pk)
    await call(chain, request(key, customer_id="new-user"))  # the snapshot knows nobody
    await sync_to_async(customer_upsert)(actor=Actor(root), organization=org, external_id="new-user", rpm_limit=1)
    chain.invalidate()
    await call(chain, request(key, customer_id="new-user"))
    with pytest.raises(ProxyRateLimitError) as info:
        await call(chain, request(key, customer_id="new-user"))
    assert info.value.scope == "customer" and "new-user" in info.value.message


def _zone_with_another_date(now: datetime) -> str:
    """A time zone whose calendar day differs from UTC's right now, so a UTC window would be the wrong one."""
    return "Pacific/Kiritimati" if now.hour >= 10 else "Etc/GMT+12"  # UTC+14 / UTC-12


@pytest.mark.parametrize("backend_kind", BACKENDS)
async def test_customer_budgets_use_the_organizations_zone_and_the_ledgers_scope_id(backend_kind):
    """A fresh counter is seeded from the BudgetWindow that spend ingestion wrote for this customer."""
    from django.utils import timezone

    from apps.ratelimit.backends.factory import ledger_seeder
    from apps.spend.models import BudgetWindow
    from apps.spend.scopes import ScopeDirectory
    from apps.spend.windows import window_for

    now = datetime.now(UTC)
    zone = _zone_with_another_date(now)
    org = await sync_to_async(OrganizationFactory)(time_zone=zone)
    customer = await sync_to_async(CustomerFactory)(
        organization=org, external_id="spender", max_budget=Decimal("1.00"), budget_duration="1d"
    )
    # Where ingestion puts this customer's spend (apps/spend/scopes.py), for a ledger row of now.
    row = type("Row", (), {"created_at": now, "organization_id": org.pk, "team_id": None, "key_id": None,
                           "user_id": None, "customer_id": "spender", "model": "m"})()  # fmt: skip
    directory = await sync_to_async(ScopeDirectory)([row])
    [ledger] = [s for s in directory.scopes(row) if s.scope == "customer"]
    assert ledger.window == window_for("1d", now, zone)
    await sync_to_async(BudgetWindow.objects.create)(
        scope="customer", scope_id=ledger.scope_id, window_id=ledger.window.id, window_start=ledger.window.start,
        window_end=ledger.window.end, spent=Decimal("0.99"), updated_at=timezone.now(),
    )  # fmt: skip
    limits = await CustomerLimits().limits(org.pk, "spender", zone)
    assert (limits.id, limits.time_zone) == (str(customer.pk), zone)
    chain = make_chain(make_backend(backend_kind, seeder=ledger_seeder()), ["apps.ratelimit.middleware.BudgetLimiter"])
    key = key_context(organization_id=org.pk, time_zone=zone)
    with pytest.raises(ProxyRateLimitError) as info:
        await call(chain, request(key, customer_id="spender", estimated_cost=Decimal("0.02")))
    assert (info.value.scope, info.value.limit_type) == ("customer", "budget")
    assert info.value.remaining == pytest.approx(0.01)
    await call(chain, request(key, customer_id="spender", estimated_cost=Decimal("0.005")))


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_a_failed_reload_keeps_the_last_snapshot_so_a_block_holds(settings, monkeypatch, mode):
    settings.RATELIMIT_FAIL_MODE = mode
    org = await sync_to_async(OrganizationFactory)()
    await sync_to_async(CustomerFactory)(organization=org, external_id="banned", blocked=True)
    await sync_to_async(CustomerFactory)(organization=org, external_id="capped", rpm_limit=3)
    customers = CustomerLimits()
    with pytest.raises(GatewayError):
        await customers.limits(org.pk, "banned", "UTC")

    def broken(*args):
        raise RuntimeError("database is down")

    monkeypatch.setattr(lookups, "_load_customers", broken)
    customers.expire()
    with pytest.raises(GatewayError) as info:
        await customers.limits(org.pk, "banned", "UTC")
    assert info.value.code == "customer_blocked"
    assert (await customers.limits(org.pk, "capped", "UTC")).rpm_limit == 3


async def test_waiting_requests_share_one_reload_and_an_older_load_never_counts_as_fresh(monkeypatch):
    import asyncio
    import threading

    org = await sync_to_async(OrganizationFactory)()
    loads: list[int] = []
    release = threading.Event()
    customers = CustomerLimits()
    original = lookups._load_customers

    def slow(*args):
        snapshot = original(*args)
        loads.append(1)
        assert release.wait(10), "the test never released the load"
        return snapshot

    monkeypatch.setattr(lookups, "_load_customers", slow)
    release.set()
    assert await customers.limits(org.pk, "late", "UTC") is None
    release.clear()
    customers.expire()
    waiting = [asyncio.ensure_future(customers.limits(org.pk, "late", "UTC")) for _ in range(20)]
    for _ in range(500):  # until the reload has queried and is parked (holding the ORM thread)
        if len(loads) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(loads) == 2

    # The admin change lands while that reload is parked: its answer must not pass for the new state.
    def block_late() -> None:  # on another thread than the parked ORM one; its connection closed after
        from django.db import connection

        try:
            CustomerFactory(organization=org, external_id="late", blocked=True)
        finally:
            connection.close()

    await sync_to_async(block_late, thread_sensitive=False)()
    customers.expire()
    release.set()
    assert await asyncio.gather(*waiting) == [None] * 20  # they asked before the change: one shared load
    assert len(loads) == 2
    with pytest.raises(GatewayError):  # the next request reloads and sees the block
        await customers.limits(org.pk, "late", "UTC")
    assert len(loads) == 3
