"""The outbox's replication guard (SPEND_STREAM_MIN_REPLICAS): a batch that fewer replicas acknowledged
than asked for is written to the ledger from the process, and the stream's copy adds nothing.

The test Redis has no replica, so ``WAIT 1`` always answers 0: exactly what a master that was just
demoted (its replica promoted away from it) answers during a Sentinel failover.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from django.conf import settings as django_settings

from apps.spend.models import SpendLog
from apps.spend.outbox import STREAM_FIELD, STREAM_KEY, spend_outbox_create
from apps.spend.stream import stream_drain
from tests.factories import SpendEventFactory, VirtualKeyFactory

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not django_settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]


async def emit_all(outbox, events) -> None:
    await asyncio.gather(*(outbox.emit(event) for event in events))
    await outbox.close()


def test_a_batch_no_replica_acknowledged_reaches_the_ledger_once(transactional_db, settings):
    settings.SPEND_STREAM_MIN_REPLICAS = 1
    settings.SPEND_STREAM_REPLICA_WAIT_MS = 50
    settings.SPEND_EMBEDDED_BEAT = False
    key = VirtualKeyFactory()
    events = [SpendEventFactory(key=key, model="mock", cost="0.00001") for _ in range(25)]
    outbox = spend_outbox_create()
    asyncio.run(emit_all(outbox, events))
    assert outbox.flush(timeout=60)

    # Written from the process because WAIT said 0 of 1 replicas ...
    ids = {event.request_id for event in events}
    assert set(SpendLog.objects.filter(key_id=key.pk).values_list("request_id", flat=True)) == ids
    # ... while the XADDs did reach the stream: ingesting them as well changes nothing.
    client = settings.REDIS_TARGET.client()
    in_stream = {orjson.loads(fields[STREAM_FIELD])["request_id"] for _id, fields in client.xrange(STREAM_KEY)}
    assert ids <= in_stream
    stream_drain(max_seconds=30)
    assert SpendLog.objects.filter(key_id=key.pk).count() == 25
