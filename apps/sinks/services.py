"""Writes for log sinks: the admin's create/update/delete (tenant rules, validation) and the workers' status.

The secret goes in here and never comes back out: ``secret`` None keeps the stored one, "" clears it.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.proxy.upstreams import api_base_problem, control_character_problem
from apps.sinks.models import LogSink, SinkKind
from apps.sinks.queue import SinkQueues
from apps.spend.stream import redis_client
from apps.teams.audit import Actor, audit_record
from apps.teams.models import Organization, Team
from apps.teams.scoping import DELETE, require

SINK_SETTABLE = (
    "name",
    "kind",
    "team",
    "url",
    "access_id",
    "bucket",
    "prefix",
    "region",
    "capture_bodies",
    "batch_size",
    "enabled",
)
SINK_REFUSAL = "You may not manage this organization's or team's log sinks."
MAX_BATCH_SIZE = 1000


def _validate(sink: LogSink) -> None:
    """Per kind, what it needs to deliver; addresses checked like upstreams (no metadata or link-local hosts)."""
    problems: dict[str, str] = {}
    if sink.team_id is not None and sink.team.organization_id != sink.organization_id:
        problems["team"] = "must belong to the sink's organization."
    if sink.url:
        problem = api_base_problem(sink.url)
        if problem:
            problems["url"] = problem
    for name in ("access_id", "bucket", "prefix", "region"):
        problem = control_character_problem(getattr(sink, name))
        if problem:
            problems[name] = problem
    if sink.kind == SinkKind.HTTP and not sink.url:
        problems["url"] = "an HTTP sink needs the URL records are POSTed to."
    if sink.kind == SinkKind.HTTP and not sink.has_secret:
        problems["secret"] = "an HTTP sink signs every request: set the signing secret."
    if sink.kind == SinkKind.LANGFUSE:
        if not sink.access_id:
            problems["access_id"] = "Langfuse needs the project's public key."
        if not sink.has_secret:
            problems["secret"] = "Langfuse needs the project's secret key."
    if sink.kind == SinkKind.S3 and not sink.bucket:
        problems["bucket"] = "an S3 sink needs a bucket."
    if not 1 <= sink.batch_size <= MAX_BATCH_SIZE:
        problems["batch_size"] = f"must be between 1 and {MAX_BATCH_SIZE}."
    if problems:
        raise ValidationError(problems)


def _forget_queue_on_commit(sink_id: int) -> None:
    """A disabled or deleted sink's queued records are not sent: its queue goes with it."""
    if settings.REDIS_TARGET is not None:
        transaction.on_commit(lambda: SinkQueues(redis_client(), capacity=0).forget(sink_id))


def log_sink_create(
    *, actor: Actor, organization: Organization, team: Team | None = None, secret: str | None = None, **values
) -> LogSink:
    unknown = set(values) - set(SINK_SETTABLE)
    if unknown:
        raise ValidationError({name: "this field cannot be set." for name in sorted(unknown)})
    sink = LogSink(organization=organization, team=team, **values)
    require(actor.user, "log_sink.manage", sink)
    if secret:
        sink.set_secret(secret)
    _validate(sink)
    with transaction.atomic():
        sink.full_clean()
        sink.save()
        audit_record(
            actor=actor,
            action="log_sink.create",
            obj=sink,
            organization=organization,
            team=team,
            changes={**values, **({"secret": secret} if secret else {})},
        )
    return sink


def log_sink_update(*, actor: Actor, sink: LogSink, secret: str | None = None, **values) -> LogSink:
    require(actor.user, "log_sink.manage", sink, message=SINK_REFUSAL)
    unknown = set(values) - set(SINK_SETTABLE)
    if unknown:
        raise ValidationError({name: "this field cannot be set." for name in sorted(unknown)})
    was_enabled = sink.enabled
    for name, value in values.items():
        setattr(sink, name, value)
    # Moved to another team: the new place must be one the actor manages too.
    require(actor.user, "log_sink.manage", sink, message=SINK_REFUSAL)
    if secret is not None:
        sink.set_secret(secret)
    _validate(sink)
    with transaction.atomic():
        sink.full_clean()
        sink.save()
        changes = dict(values)
        if secret is not None:
            changes["secret"] = secret
        audit_record(
            actor=actor,
            action="log_sink.update",
            obj=sink,
            organization=sink.organization,
            team=sink.team,
            changes=changes,
        )
        if was_enabled and not sink.enabled:
            _forget_queue_on_commit(sink.pk)
    return sink


def log_sink_delete(*, actor: Actor, sink: LogSink) -> None:
    require(actor.user, DELETE, sink, message=SINK_REFUSAL)
    with transaction.atomic():
        sink_id = sink.pk
        audit_record(actor=actor, action="log_sink.delete", obj=sink, organization=sink.organization, team=sink.team)
        sink.delete()
        _forget_queue_on_commit(sink_id)


def log_sink_status_record(
    *, sink_id: int, delivered: int = 0, dropped: int = 0, error: str = "", succeeded: bool = False
) -> None:
    """What a worker saw of one sink: counts added, the last success and the last error (one UPDATE)."""
    now = timezone.now()
    changes: dict = {}
    if delivered:
        changes["delivered_count"] = F("delivered_count") + delivered
    if dropped:
        changes["dropped_count"] = F("dropped_count") + dropped
    if succeeded:
        changes["last_success_at"] = now
    if error:
        changes["last_error"] = error[:500]
        changes["last_error_at"] = now
    if changes:
        LogSink.objects.filter(pk=sink_id).update(**changes)
