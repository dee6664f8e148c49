"""Monitoring writes: evaluating the alert rules into sent-once alerts, and alert channels.

Every alert is an ``AlertEvent`` row created before anything is sent; the row is UNIQUE per (rule,
subject, window), so when two workers (or two beat runs) evaluate the same minute only the one whose
insert wins delivers. A failed delivery is recorded on the row and the channel, not retried.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from apps.monitoring.delivery import alert_deliver
from apps.monitoring.models import AlertChannel, AlertEvent, AlertRule
from apps.monitoring.rules import RULES, Finding
from apps.proxy.crypto import encrypt
from apps.proxy.upstreams import api_base_problem
from apps.teams.audit import Actor, audit_record
from apps.teams.scoping import CHANGE, DELETE, require

logger = logging.getLogger(__name__)

CHANNEL_FIELDS = ("name", "kind", "organization", "team", "rules", "recipients", "enabled")
BUDGET_RULES = (AlertRule.BUDGET_SOFT, AlertRule.BUDGET_HARD)


def channels_for(finding: Finding | AlertEvent) -> list[AlertChannel]:
    """Enabled channels that receive this alert: the operator's (no organization), the organization's
    own, and the team's own when the alert is about a team; each filtered by the rules it asked for."""
    reach = Q(organization__isnull=True)
    if finding.organization_id is not None:
        reach |= Q(organization_id=finding.organization_id, team__isnull=True)
        if finding.team_id is not None:
            reach |= Q(organization_id=finding.organization_id, team_id=finding.team_id)
    channels = AlertChannel.objects.filter(reach, enabled=True).order_by("pk")
    return [c for c in channels if c.wants(finding.rule)]


def _claim(finding: Finding) -> AlertEvent | None:
    """The new alert row, or None when another evaluation already has it."""
    try:
        with transaction.atomic():
            event, created = AlertEvent.objects.get_or_create(
                rule=finding.rule,
                subject=finding.subject,
                window_id=finding.window_id,
                defaults={
                    "organization_id": finding.organization_id,
                    "team_id": finding.team_id,
                    "title": finding.title[:300],
                    "text": finding.text,
                    "facts": finding.facts,
                },
            )
    except IntegrityError:  # the other worker's insert won between our read and write
        return None
    return event if created else None


def alert_send(event: AlertEvent) -> AlertEvent:
    """Deliver a claimed alert to its channels and record what each answered."""
    # Budget alerts went to GATEWAY_ALERT_WEBHOOK_URL from apps/spend already.
    operator = settings.GATEWAY_ALERT_WEBHOOK_URL if event.rule not in BUDGET_RULES else ""
    channels = channels_for(event)
    event.deliveries = alert_deliver(event, channels, extra_webhooks=[operator] if operator else [])
    event.save(update_fields=["deliveries"])
    now = timezone.now()
    for record in event.deliveries:
        if record["channel_id"] is not None:
            AlertChannel.objects.filter(pk=record["channel_id"]).update(
                last_status=record["status"][:80], last_sent_at=now
            )
    return event


def alerts_evaluate(*, now: datetime | None = None) -> list[AlertEvent]:
    """Run every rule; create and deliver each alert not yet sent for its window. Returns the ones sent."""
    now = now or timezone.now()
    sent = []
    for rule in RULES:
        try:
            findings = rule(now=now)
        except Exception:  # one broken rule must not silence the others; logged with its traceback
            logger.exception("alert rule %s failed", rule.__name__)
            continue
        for finding in findings:
            event = _claim(finding)
            if event is not None:
                sent.append(alert_send(event))
    return sent


def _check_channel(channel: AlertChannel, url: str | None) -> None:
    errors: dict[str, str] = {}
    if channel.team_id and channel.team.organization_id != channel.organization_id:
        errors["team"] = "The team belongs to another organization."
    unknown = [r for r in channel.rules or [] if r not in AlertRule.values]
    if not isinstance(channel.rules, list) or unknown:
        errors["rules"] = f"Unknown alert types: {', '.join(map(str, unknown))}. Known: {', '.join(AlertRule.values)}."
    if channel.kind == AlertChannel.Kind.EMAIL:
        if not channel.recipient_list():
            errors["recipients"] = "An e-mail channel needs at least one address."
        for address in channel.recipient_list():
            try:
                validate_email(address)
            except ValidationError:
                errors["recipients"] = f"Not an e-mail address: {address}"
    elif url is not None:
        problem = api_base_problem(url)
        if problem:
            errors["url"] = f"The URL {problem}"
    elif not channel.has_url:
        errors["url"] = "A webhook or Slack channel needs its URL."
    if errors:
        raise ValidationError(errors)


def alert_channel_save(*, actor: Actor, channel: AlertChannel | None = None, url: str | None = None, **values):
    """Create or update a channel. Admins of its organization (or of its team, for a team channel) may;
    a channel without an organization is a superuser's. ``url`` None keeps the stored one; it is never
    returned, logged or audited."""
    unknown = set(values) - set(CHANNEL_FIELDS)
    if unknown:
        raise ValidationError({name: "unknown field" for name in unknown})
    channel = channel or AlertChannel()
    for name, value in values.items():
        setattr(channel, name, value)
    if channel.rules is None:
        channel.rules = []
    require(actor.user, CHANGE, channel, message="Only admins of this organization or team may set up its alerts.")
    url = url.strip() if isinstance(url, str) else None
    _check_channel(channel, url or None)
    with transaction.atomic():
        if url and channel.kind != AlertChannel.Kind.EMAIL:
            channel.url_encrypted = encrypt(url)
        channel.full_clean(exclude=["url_encrypted"])
        creating = channel.pk is None
        channel.save()
        changes = {k: v for k, v in values.items() if k not in ("organization", "team")}
        if url:
            changes["url"] = "(changed)"
        audit_record(
            actor=actor,
            action="alert_channel.create" if creating else "alert_channel.update",
            obj=channel,
            organization=channel.organization,
            team=channel.team,
            changes=changes,
        )
    return channel


def alert_channel_delete(*, actor: Actor, channel: AlertChannel) -> None:
    require(actor.user, DELETE, channel, message="You may not delete this alert channel.")
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="alert_channel.delete",
            obj=channel,
            organization=channel.organization,
            team=channel.team,
            changes={"name": channel.name},
        )
        channel.delete()
