"""Alerts beyond budgets: each rule, each channel kind's payload, routing by tenant, and sent once per window.

olga (Acme org admin) and alice (Alpha admin) set up Acme's channels; charlie (Omega admin) is the
outsider whose channels must never hear of Acme.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from apps.monitoring.models import AlertChannel, AlertEvent, DeploymentProbe
from apps.monitoring.services import alert_channel_save, alerts_evaluate
from apps.spend.ingest import spend_ingest_events
from apps.spend.services import budget_alerts_send
from apps.teams.audit import Actor
from apps.teams.models import AuditEvent
from tests.factories import DeploymentFactory, SpendEventFactory, VirtualKeyFactory
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture
def receiver():
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def alpha_key(alpha, alice):
    return VirtualKeyFactory(team=alpha, user=alice, alias="ci <!channel>")


@pytest.fixture
def omega_key(omega, charlie):
    return VirtualKeyFactory(team=omega, user=charlie, alias="omega-key")


def _channel(user, kind, *, organization, team=None, url=None, recipients="", rules=()):
    return alert_channel_save(
        actor=Actor(user, source="admin"),
        url=url,
        name=f"{kind} of {team or organization}",
        kind=kind,
        organization=organization,
        team=team,
        rules=list(rules),
        recipients=recipients,
        enabled=True,
    )


def _failing_probe(deployment, *, at=None):
    return DeploymentProbe.objects.create(
        deployment=deployment, ok=False, status=500, detail="upstream exploded", probed_at=at or timezone.now(),
        consecutive_failures=2,
    )  # fmt: skip


@pytest.mark.django_db
def test_a_failing_deployment_reaches_the_webhook_and_slack_once_per_window(olga, acme, alpha_key, receiver):
    deployment = DeploymentFactory(organization=acme, model_name="acme-model", name="primary")
    failed = [
        SpendEventFactory(key=alpha_key, deployment_id=deployment.pk, status=502, error_type="upstream_connection")
        for _ in range(4)
    ]
    spend_ingest_events([*failed, SpendEventFactory(key=alpha_key, deployment_id=deployment.pk)])
    _channel(olga, "webhook", organization=acme, url=receiver.url("hook"))
    _channel(olga, "slack", organization=acme, url=receiver.url("slack"))

    [event] = alerts_evaluate()
    assert alerts_evaluate() == []  # the next minute's evaluation: same window, nothing new

    [hook] = receiver.bodies("hook")
    assert hook["type"] == "deployment.unhealthy" and hook["subject"] == f"deployment:{deployment.pk}"
    assert hook["id"] == event.pk and hook["organization_id"] == acme.pk and hook["team_id"] is None
    assert hook["window_id"].endswith("Z/15m")
    assert hook["title"] == "Deployment primary of acme-model is unhealthy"
    assert hook["text"].startswith("4 of 5 requests failed in the last 15 minutes")
    assert hook["facts"] | {"deployment_id": 0} == {
        "deployment_id": 0,
        "model_name": "acme-model",
        "provider": "mock",
        "requests": 5,
        "errors": 4,
        "error_rate": 0.8,
        "last_error": "502 upstream_connection",
        "probe": "none",
        "cooldown_seconds": 0,
    }
    [slack] = receiver.bodies("slack")
    assert slack["text"] == hook["title"]
    assert [b["type"] for b in slack["blocks"]] == ["header", "section", "section", "context"]
    header, text, facts, context = slack["blocks"]
    assert header["text"] == {"type": "plain_text", "text": hook["title"], "emoji": False}
    assert text["text"]["type"] == "mrkdwn" and text["text"]["text"].startswith("4 of 5 requests failed")
    assert {"type": "mrkdwn", "text": "*errors*\n4"} in facts["fields"] and len(facts["fields"]) <= 10
    assert context["elements"][0]["text"].startswith("deployment.unhealthy | deployment:")
    assert [d["status"] for d in AlertEvent.objects.get().deliveries] == ["200", "200"]
    assert AlertChannel.objects.filter(last_status="200").count() == 2


@pytest.mark.django_db
def test_a_failed_probe_alerts_again_in_the_next_window_only(olga, acme, receiver):
    deployment = DeploymentFactory(organization=acme, model_name="acme-model")
    _failing_probe(deployment)
    _channel(olga, "webhook", organization=acme, url=receiver.url("hook"))
    now = timezone.now().replace(second=0, microsecond=0)
    now -= timedelta(minutes=now.minute % 15 - 1)  # a minute into a clock-aligned 15-minute window
    assert len(alerts_evaluate(now=now)) == 1
    assert alerts_evaluate(now=now + timedelta(minutes=13)) == []  # the same window
    DeploymentProbe.objects.update(probed_at=now + timedelta(minutes=15))  # still failing a window later
    assert len(alerts_evaluate(now=now + timedelta(minutes=15))) == 1
    texts = [b["text"] for b in receiver.bodies("hook")]
    assert len(texts) >= 2 and "its probe failed (HTTP 500, 2 in a row): upstream exploded" in texts[0]


@pytest.mark.django_db
def test_limits_hit_repeatedly_alert_the_teams_channel_and_never_the_outsider(
    settings, alice, alpha, charlie, omega, alpha_key, omega_key, receiver
):
    settings.ALERT_LIMIT_REFUSALS = 5
    refusals = [
        SpendEventFactory(key=alpha_key, status=429, limit_type=kind, error_type=f"rate_limit:{kind}")
        for kind in ("requests", "requests", "requests", "tokens", "budget")
    ]
    lonely = SpendEventFactory(key=omega_key, status=429, limit_type="requests", error_type="rate_limit:requests")
    spend_ingest_events([*refusals, lonely])
    _channel(alice, "email", organization=alpha.organization, team=alpha, recipients="oncall@acme.test")
    _channel(alice, "slack", organization=alpha.organization, team=alpha, url=receiver.url("alpha"))
    _channel(charlie, "webhook", organization=omega.organization, team=omega, url=receiver.url("omega"))

    sent = alerts_evaluate()
    assert sorted(e.subject for e in sent) == [f"key:{alpha_key.pk}", f"team:{alpha.pk}"]
    assert receiver.bodies("omega") == []
    assert sorted(m.subject for m in mail.outbox) == [
        "[LLM gateway] Key ci <!channel> was refused by its limits 5 times",
        "[LLM gateway] Team Alpha was refused by its limits 5 times",
    ]
    assert mail.outbox[0].to == ["oncall@acme.test"] and "requests: 3" in mail.outbox[0].body
    key_alert = next(b for b in receiver.bodies("alpha") if "Key" in b["text"])
    header = key_alert["blocks"][0]["text"]["text"]
    assert header == "Key ci <!channel> was refused by its limits 5 times"  # plain_text: Slack shows it as typed
    assert "&lt;!channel&gt;" in key_alert["blocks"][1]["text"]["text"]  # mrkdwn: escaped, no @channel ping
    assert "<!channel>" not in str(key_alert["blocks"][1:])


@pytest.mark.django_db
def test_spend_over_three_times_the_weekly_average_alerts_once_a_day(olga, acme, alpha, alpha_key, receiver):
    now = timezone.now()
    history = [
        SpendEventFactory(key=alpha_key, cost="1.00", created_at=(now - timedelta(days=d)).timestamp())
        for d in range(1, 8)
    ]
    spend_ingest_events([*history, SpendEventFactory(key=alpha_key, cost="2.50")])
    _channel(olga, "webhook", organization=acme, url=receiver.url("hook"), rules=["spend.anomaly"])
    assert alerts_evaluate(now=now) == []  # 2.50 is not over 3 x 1.00

    spend_ingest_events([SpendEventFactory(key=alpha_key, cost="1.00")])
    sent = alerts_evaluate(now=now)
    assert sorted(e.subject for e in sent) == [f"organization:{acme.pk}", f"team:{alpha.pk}"]
    assert alerts_evaluate(now=now) == []
    body = next(b for b in receiver.bodies("hook") if b["subject"] == f"team:{alpha.pk}")
    assert body["title"] == "Team Alpha spent $3.50 today, 3.5 times its 7-day average"
    assert body["facts"]["today_usd"] == "3.500000" and body["facts"]["average_usd"] == "1.000000"
    assert body["window_id"] == now.date().isoformat()


@pytest.mark.django_db
def test_a_channel_receives_only_the_alert_types_it_chose(olga, acme, receiver):
    _failing_probe(DeploymentFactory(organization=acme))
    _channel(olga, "webhook", organization=acme, url=receiver.url("spend-only"), rules=["spend.anomaly"])
    assert len(alerts_evaluate()) == 1
    assert receiver.bodies("spend-only") == []


@pytest.mark.django_db
def test_budget_alerts_reach_the_channels_once_and_the_operator_webhook_once(settings, olga, acme, alpha_key, receiver):
    settings.GATEWAY_ALERT_WEBHOOK_URL = receiver.url("operator")
    alpha_key.max_budget = Decimal("0.5")
    alpha_key.save()
    spend_ingest_events([SpendEventFactory(key=alpha_key, cost="0.75")])
    _channel(olga, "slack", organization=acme, url=receiver.url("slack"))
    budget_alerts_send()
    [event] = alerts_evaluate()
    assert alerts_evaluate() == []
    assert event.rule == "budget.hard" and event.subject == f"key:{alpha_key.pk}"
    [slack] = receiver.bodies("slack")
    assert "reached its budget" in slack["text"]
    assert [b["type"] for b in receiver.bodies("operator")] == ["budget.hard"]  # spend's post, not repeated


@pytest.mark.django_db
def test_an_operator_channel_hears_every_tenant_and_a_failed_delivery_is_recorded(root, acme, globex, receiver):
    _failing_probe(DeploymentFactory(organization=acme))
    _failing_probe(DeploymentFactory(organization=globex))
    _channel(root, "webhook", organization=None, url=receiver.url("broken"))
    _channel(root, "webhook", organization=None, url="http://127.0.0.1:9/nothing-listens")
    assert len(alerts_evaluate()) == 2
    assert len(receiver.bodies("broken")) == 2
    statuses = {d["status"] for e in AlertEvent.objects.all() for d in e.deliveries}
    assert statuses == {"500", "failed: ClientConnectorError"}
    assert AlertEvent.objects.count() == 2  # recorded, not retried


@pytest.mark.django_db(transaction=True)
def test_two_workers_evaluating_at_once_send_one_alert(olga, acme, receiver):
    _failing_probe(DeploymentFactory(organization=acme))
    _channel(olga, "webhook", organization=acme, url=receiver.url("hook"))
    start, now, results = threading.Barrier(2), timezone.now(), []

    def evaluate():
        try:
            start.wait(10)
            results.append(len(alerts_evaluate(now=now)))
        finally:
            connection.close()

    threads = [threading.Thread(target=evaluate) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [0, 1]
    assert len(receiver.bodies("hook")) == 1


@pytest.mark.django_db
def test_channel_urls_are_encrypted_write_only_and_checked(client, olga, acme, receiver):
    url = receiver.url("hooks/T000/B000/secret-token-xyz")
    channel = _channel(olga, "slack", organization=acme, url=url)
    assert channel.has_url and "secret-token-xyz" not in channel.url_encrypted
    client.force_login(olga)
    page = client.get(reverse("admin:monitoring_alertchannel_change", args=[channel.pk])).content.decode()
    listing = client.get(reverse("admin:monitoring_alertchannel_changelist")).content.decode()
    assert "secret-token-xyz" not in page + listing and "set" in listing
    assert "secret-token-xyz" not in str(list(AuditEvent.objects.values_list("changes", flat=True)))
    with pytest.raises(ValidationError, match="metadata"):
        _channel(olga, "webhook", organization=acme, url="http://169.254.169.254/latest")
    with pytest.raises(ValidationError, match="needs its URL"):
        _channel(olga, "webhook", organization=acme)
    with pytest.raises(ValidationError, match="Not an e-mail address"):
        _channel(olga, "email", organization=acme, recipients="ops@acme.test, nope")


@pytest.mark.django_db
def test_who_may_set_up_channels(alice, bob, charlie, olga, acme, alpha, receiver):
    with pytest.raises(PermissionDenied):
        _channel(charlie, "webhook", organization=acme, url=receiver.url("x"))  # the outsider
    with pytest.raises(PermissionDenied):
        _channel(bob, "webhook", organization=acme, team=alpha, url=receiver.url("x"))  # a member
    with pytest.raises(PermissionDenied):
        _channel(alice, "webhook", organization=acme, url=receiver.url("x"))  # a team admin, organization-wide
    with pytest.raises(PermissionDenied):
        _channel(olga, "webhook", organization=None, url=receiver.url("x"))  # the operator's: superusers only
    assert _channel(alice, "webhook", organization=acme, team=alpha, url=receiver.url("x")).team == alpha
