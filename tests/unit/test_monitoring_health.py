"""Deployment health that is true: a few failed requests are not "ok", and a probe knows without traffic.

alice (Alpha admin) reads the health of Acme's model group; the ledger rows come from Alpha's key.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from apps.console.deployment_health import group_health
from apps.monitoring.models import DeploymentProbe
from apps.spend.ingest import spend_ingest_events
from tests.factories import DeploymentFactory, SpendEventFactory, VirtualKeyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def alpha_key(alpha, alice):
    return VirtualKeyFactory(team=alpha, user=alice, alias="alpha-key")


@pytest.fixture
def deployment(acme):
    return DeploymentFactory(organization=acme, model_name="acme-model")


def _request(key, deployment, *, failed: bool):
    return SpendEventFactory(
        key=key,
        deployment_id=deployment.pk,
        llm_provider="mock",
        status=502 if failed else 200,
        error_type="upstream_connection" if failed else None,
    )


def _state(user) -> str:
    [health] = group_health(user, "acme-model").deployments
    return health.state


def test_three_of_three_failed_requests_are_not_ok(alice, alpha_key, deployment):
    spend_ingest_events([_request(alpha_key, deployment, failed=True) for _ in range(3)])
    [health] = group_health(alice, "acme-model").deployments
    assert (health.requests, health.errors, health.state) == (3, 3, "degraded")


def test_a_failure_rate_under_the_threshold_stays_ok(alice, alpha_key, deployment):
    requests = [_request(alpha_key, deployment, failed=False) for _ in range(9)]
    spend_ingest_events([*requests, _request(alpha_key, deployment, failed=True)])
    assert _state(alice) == "ok"  # 1 of 10 is under DEPLOYMENT_DEGRADED_ERROR_RATE (0.2)


def test_the_minimum_request_count_is_a_setting(alice, alpha_key, deployment, settings):
    settings.DEPLOYMENT_DEGRADED_MIN_REQUESTS = 4
    spend_ingest_events([_request(alpha_key, deployment, failed=True) for _ in range(3)])
    assert _state(alice) == "ok"


def test_a_failed_probe_without_traffic_is_failing_and_shows_why(client, alice, deployment):
    DeploymentProbe.objects.create(
        deployment=deployment,
        ok=False,
        status=500,
        latency_ms=4.2,
        detail="upstream exploded",
        probed_at=timezone.now(),
        consecutive_failures=3,
    )
    assert _state(alice) == "failing"
    client.force_login(alice)
    html = client.get(reverse("gateway-deployment-group", args=["acme-model"])).content.decode()
    assert "gw-health-failing" in html and "failed (HTTP 500)" in html
    assert "upstream exploded" in html and "(3 in a row)" in html


def test_a_passing_probe_without_traffic_is_ok_and_a_stale_one_is_ignored(alice, deployment, settings):
    probe = DeploymentProbe.objects.create(
        deployment=deployment, ok=True, status=200, latency_ms=3, probed_at=timezone.now()
    )
    assert _state(alice) == "ok"
    probe.probed_at = timezone.now() - timedelta(seconds=3 * settings.DEPLOYMENT_PROBE_INTERVAL_SECONDS + 5)
    probe.ok = False
    probe.save()
    assert _state(alice) == "idle"  # beat stopped probing: an old failure says nothing about now


def test_an_outsider_sees_no_probe_of_acmes_deployment(client, charlie, deployment):
    DeploymentProbe.objects.create(deployment=deployment, ok=False, detail="acme-internal", probed_at=timezone.now())
    client.force_login(charlie)
    response = client.get(reverse("gateway-deployment-group", args=["acme-model"]))
    assert response.status_code == 404 and b"acme-internal" not in response.content
