"""A populated gateway for the admin's browser suites: realistic names (long aliases, several teams),
budgets at every level, two weeks of small costs (axis labels like $0.00050), audit events made through the
services, a healthy shared deployment and one that failed 3 of 3 requests."""

from __future__ import annotations

import time
from decimal import Decimal

from apps.keys.services import key_create
from apps.spend.ingest import spend_ingest_events
from apps.teams.audit import Actor
from tests.factories import (
    DeploymentFactory,
    MembershipFactory,
    OrganizationFactory,
    SpendEventFactory,
    TeamFactory,
    UserFactory,
    VirtualKeyFactory,
)

LONG_ALIAS = "checkout-service-production-eu-west-1-batch-reconciliation"


def admin_cast() -> dict:
    root = UserFactory(username="root", is_superuser=True)
    acme = OrganizationFactory(name="Acme Corporation")
    budget = {"soft_budget": Decimal("0.0004"), "max_budget": Decimal("0.01"), "budget_duration": "1mo"}
    alpha = TeamFactory(organization=acme, name="Alpha platform engineering", **budget)
    beta = TeamFactory(organization=acme, name="Beta")
    globex = OrganizationFactory(name="Globex")
    omega = TeamFactory(organization=globex, name="Omega")
    alice = UserFactory(username="alice", email="alice.longname@acme-corporation.example.com")
    MembershipFactory(user=alice, team=alpha, organization=acme, role="admin")
    bob = UserFactory(username="bob")
    MembershipFactory(user=bob, team=alpha, organization=acme, role="member")
    charlie = UserFactory(username="charlie")
    MembershipFactory(user=charlie, team=omega, organization=globex, role="admin")

    shared = DeploymentFactory(model_name="gpt-4o-mini", provider="mock", organization=None)
    broken = DeploymentFactory(model_name="acme-claude", provider="mock", organization=acme)
    actor = Actor(user=alice, source="admin", ip_address="127.0.0.1")
    long_key = key_create(
        actor=actor,
        team=alpha,
        user=alice,
        alias=LONG_ALIAS,
        rpm_limit=600,
        tpm_limit=100_000,
        max_budget=Decimal("0.005"),
        soft_budget=Decimal("0.0003"),
        budget_duration="1d",
        allowed_models=["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet-20241022", "text-embedding-3-large"],
    ).key
    batch = VirtualKeyFactory(team=alpha, user=bob, alias="alpha-batch-job", max_budget=Decimal("0.002"))
    omega_key = VirtualKeyFactory(team=omega, user=charlie, alias="omega-secret-project")
    VirtualKeyFactory(team=beta, alias="beta-nightly-export")

    now = time.time()
    events = []
    for days_ago, cost in ((13, "0.00012"), (9, "0.00031"), (6, "0.00011"), (4, "0.00023"), (1, "0.00047")):
        for key in (long_key, batch):
            events.append(
                SpendEventFactory(key=key, created_at=now - days_ago * 86400, cost=cost, deployment_id=shared.pk)
            )
    events += [SpendEventFactory(key=long_key, cost="0.0009", deployment_id=shared.pk, latency_ms=812.4)]
    events += [SpendEventFactory(key=batch, status=429, limit_type="requests", cost="0") for _ in range(2)]
    # The broken deployment: three requests in the last minutes, three upstream failures.
    events += [
        SpendEventFactory(
            key=long_key, model="acme-claude", deployment_id=broken.pk, status=502, cost="0", created_at=now - 60 * n
        )
        for n in range(1, 4)
    ]
    events.append(SpendEventFactory(key=omega_key, cost="9.99", created_at=now - 3600))
    spend_ingest_events(events)
    return {
        "root": root,
        "alice": alice,
        "bob": bob,
        "charlie": charlie,
        "alpha": alpha,
        "omega": omega,
        "long_key": long_key,
        "batch": batch,
        "shared": shared,
        "broken": broken,
    }
