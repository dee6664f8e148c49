"""Reads of the sinks for the workers: which sinks take which rows, and what delivery needs."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from apps.sinks.models import LogSink
from apps.sinks.transports import SinkTarget


@dataclass(frozen=True, slots=True)
class SinkRoute:
    """Which rows one enabled sink takes: its organization's, or only its team's."""

    id: int
    kind: str
    organization_id: int
    team_id: int | None
    capture_bodies: bool

    def takes(self, organization_id: int | None, team_id: int | None) -> bool:
        if organization_id != self.organization_id:
            return False
        return self.team_id is None or self.team_id == team_id


def sink_routes() -> list[SinkRoute]:
    """Every enabled sink (one query per ingested batch: a handful of rows, no cache to invalidate)."""
    rows = LogSink.objects.filter(enabled=True).values_list(
        "id", "kind", "organization_id", "team_id", "capture_bodies"
    )
    return [SinkRoute(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class Deliverable:
    target: SinkTarget
    batch_size: int


def sink_targets() -> tuple[list[Deliverable], list[int]]:
    """Enabled sinks with what delivery needs (secret decrypted), and the ids whose secret cannot be decrypted.

    A secret that no configured ``GATEWAY_ENCRYPTION_KEYS`` opens (keys rotated away) stops that sink only.
    """
    timeout = settings.SINKS_TIMEOUT_SECONDS
    deliverable: list[Deliverable] = []
    undecryptable: list[int] = []
    for sink in LogSink.objects.filter(enabled=True).order_by("id"):
        try:
            secret = sink.get_secret()
        except ValueError:
            undecryptable.append(sink.pk)
            continue
        target = SinkTarget(
            id=sink.pk,
            kind=sink.kind,
            name=sink.name,
            organization_id=sink.organization_id,
            url=sink.url,
            access_id=sink.access_id,
            secret=secret,
            bucket=sink.bucket,
            prefix=sink.prefix,
            region=sink.region,
            timeout=timeout,
        )
        deliverable.append(Deliverable(target, sink.batch_size))
    return deliverable, undecryptable
