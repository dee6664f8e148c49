"""Probes and alerts in the real processes: beat (django-celery-beat's DatabaseScheduler) dispatches
them, a worker calls every enabled deployment over real HTTP, a deployment with no traffic at all shows
its true state on the health page, and its alert reaches Slack once however often the rules run."""

from __future__ import annotations

import pytest
from django.conf import settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from apps.console.deployment_health import group_health
from apps.monitoring.models import AlertEvent, DeploymentProbe
from apps.monitoring.services import alert_channel_save
from apps.spend.models import BudgetWindow, SpendLog
from apps.spend.schedules import schedules_setup
from apps.teams.audit import Actor
from tests.factories import DeploymentFactory
from tests.integration.spend_processes import CeleryBeat, CeleryWorker, empty_spend_stream, wait_until
from tests.support.mock_upstream import MockUpstream
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]


@pytest.fixture
def upstream():
    with MockUpstream() as server:
        yield server


@pytest.fixture
def processes(transactional_db, tmp_path):
    empty_spend_stream()  # the ledger assertions below count every SpendLog the worker writes
    schedules_setup()
    # As an admin would in the admin: probe and evaluate every 2 s instead of every 300 and 60.
    every_2s, _ = IntervalSchedule.objects.get_or_create(every=2, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(task__startswith="monitoring.").update(interval=every_2s)
    worker = CeleryWorker(tmp_path, embedded_beat=False)
    beat = CeleryBeat(tmp_path)
    worker.start()
    beat.start()
    yield worker, beat
    beat.stop()
    worker.stop()


def test_beat_probes_a_failing_deployment_with_no_traffic_into_failing(root, acme, upstream, processes):
    worker, _beat = processes
    broken = DeploymentFactory(
        organization=acme,
        model_name="acme-model",
        provider="openai_compatible",
        model="fail-500",
        api_base=upstream.url,
    )
    healthy = DeploymentFactory(
        organization=acme, model_name="acme-model", provider="openai_compatible", model="small", api_base=upstream.url
    )
    off = DeploymentFactory(organization=acme, model_name="acme-model", model="never", enabled=False)

    def probed_twice() -> bool:
        return DeploymentProbe.objects.filter(deployment=broken, consecutive_failures__gte=2).exists()

    wait_until(probed_twice, timeout=90, message="beat never probed the failing deployment twice", worker=worker)
    wait_until(lambda: DeploymentProbe.objects.filter(deployment=healthy).exists(), timeout=30,
               message="the healthy deployment was not probed", worker=worker)  # fmt: skip
    probe = DeploymentProbe.objects.get(deployment=broken)
    assert (probe.ok, probe.status) == (False, 500) and "exploded" in probe.detail
    assert DeploymentProbe.objects.get(deployment=healthy).ok is True
    assert not DeploymentProbe.objects.filter(deployment=off).exists()  # disabled deployments are not called

    states = {h.deployment.pk: h.state for h in group_health(root, "acme-model").deployments}
    assert states == {broken.pk: "failing", healthy.pk: "ok", off.pk: "disabled"}
    # Probes are the gateway's own calls: nothing in the ledger, no tenant's budget window touched.
    assert SpendLog.objects.count() == 0 and BudgetWindow.objects.count() == 0
    chats = [r for r in upstream.requests if r["path"] == "/v1/chat/completions"]
    assert chats and all(r["body"]["max_tokens"] == 1 for r in chats)


def evaluations(worker: CeleryWorker) -> int:
    """Alert evaluations the worker finished (its log: beat's own run counts are written back lazily)."""
    log = worker.workdir / f"worker-{worker.starts}.log"
    return sum("monitoring.evaluate_alerts[" in line and "succeeded" in line for line in log.read_text().splitlines())


def test_a_probed_failure_reaches_slack_once_across_many_evaluations(olga, acme, upstream, processes):
    worker, _beat = processes
    with WebhookReceiver() as receiver:
        alert_channel_save(
            actor=Actor(olga, source="admin"), url=receiver.url("slack"), name="ops", kind="slack",
            organization=acme, team=None, rules=[], recipients="", enabled=True,
        )  # fmt: skip
        broken = DeploymentFactory(
            organization=acme, provider="openai_compatible", model="fail-500", api_base=upstream.url, name="primary"
        )
        wait_until(lambda: receiver.bodies("slack"), timeout=90, message="no alert reached Slack", worker=worker)
        # Probes and evaluations keep running every 2 s; the window (15 minutes) allows no second message.
        first = evaluations(worker)
        wait_until(lambda: evaluations(worker) >= first + 3, timeout=60, message="beat stopped evaluating",
                   worker=worker)  # fmt: skip
        [slack] = receiver.bodies("slack")
    assert slack["text"] == "Deployment primary of gpt-4o-mini is unhealthy"
    assert "its probe failed (HTTP 500" in slack["blocks"][1]["text"]["text"]
    [event] = AlertEvent.objects.all()
    assert (event.rule, event.subject, event.deliveries[0]["status"]) == (
        "deployment.unhealthy",
        f"deployment:{broken.pk}",
        "200",
    )
