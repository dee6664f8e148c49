"""Log sink delivery in the worker's code path, with real Redis queues, real HTTP receivers and moto's S3 server:
each kind gets its tenant's records and no other's, a failing sink is retried then dropped and counted while the
others deliver, a hanging one holds only itself, and a full queue drops rather than grows."""

from __future__ import annotations

import uuid

import orjson
import pytest
import redis
from django.conf import settings
from prometheus_client import REGISTRY

from apps.common.redis_target import RedisTarget
from apps.sinks.dispatch import sinks_deliver, sinks_enqueue
from apps.sinks.models import LogSink, SinkKind
from apps.sinks.queue import PREFIX, queue_key
from apps.sinks.services import log_sink_delete, log_sink_update
from apps.spend.ingest import spend_ingest_events
from apps.spend.models import SpendLog
from apps.teams.audit import Actor
from tests.factories import OrganizationFactory, SpendEventFactory, TeamFactory, VirtualKeyFactory
from tests.integration.sinks_support import MotoS3, SinkReceiver, verify_signature

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]

HMAC_SECRET = "whsec-" + "0123456789abcdef" * 2
LANGFUSE = ("pk-lf-test-public", "sk-lf-" + "f" * 32)


@pytest.fixture
def queues():
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(f"{PREFIX}:*"):
        client.delete(key)
    yield client
    for key in client.scan_iter(f"{PREFIX}:*"):
        client.delete(key)


@pytest.fixture
def tenants(transactional_db):
    acme = OrganizationFactory(name="Acme")
    alpha, beta = TeamFactory(organization=acme, name="Alpha"), TeamFactory(organization=acme, name="Beta")
    globex = OrganizationFactory(name="Globex")
    omega = TeamFactory(organization=globex, name="Omega")
    return {
        "acme": acme,
        "globex": globex,
        "alpha_key": VirtualKeyFactory(team=alpha, alias="alpha-app"),
        "beta_key": VirtualKeyFactory(team=beta, alias="beta-app"),
        "omega_key": VirtualKeyFactory(team=omega, alias="omega-app"),
    }


def sink(organization, kind: str, *, secret: str = "", team=None, **fields) -> LogSink:
    row = LogSink(organization=organization, team=team, kind=kind, name=f"{kind}-{uuid.uuid4().hex[:6]}", **fields)
    if secret:
        row.set_secret(secret)
    row.save()
    return row


def ingest(key, count: int) -> list[str]:
    """Events through the real ingestion service: its commit hook queues them for the sinks."""
    events = [SpendEventFactory(key=key, prompt_tokens=7, completion_tokens=3, cost="0.25") for _ in range(count)]
    spend_ingest_events(events)
    return [e.request_id for e in events]


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_kind_receives_its_tenants_records_and_no_other(tenants, queues, tmp_path):
    with SinkReceiver(langfuse_keys=LANGFUSE) as receiver, MotoS3(tmp_path) as s3:
        s3.client().create_bucket(Bucket="gateway-logs")
        acme_http = sink(tenants["acme"], SinkKind.HTTP, url=receiver.url + "/hook", secret=HMAC_SECRET)
        team = tenants["alpha_key"].team
        sink(tenants["acme"], SinkKind.LANGFUSE, team=team, url=receiver.url, access_id=LANGFUSE[0], secret=LANGFUSE[1])
        sink(tenants["acme"], SinkKind.S3, url=s3.url, bucket="gateway-logs", prefix="acme/", access_id="test-access",
             secret="test-secret")  # fmt: skip
        with SinkReceiver() as globex_receiver:
            sink(tenants["globex"], SinkKind.HTTP, url=globex_receiver.url + "/hook", secret="globex-secret")

            alpha = ingest(tenants["alpha_key"], 3)
            beta = ingest(tenants["beta_key"], 2)
            omega = ingest(tenants["omega_key"], 4)
            result = sinks_deliver()

            assert result.delivered == 5 + 3 + 5 + 4 and result.dropped == 0
            # The organization's HTTP sink: all of Acme's records, signed, none of Globex's.
            assert sorted(r["request_id"] for r in receiver.records()) == sorted(alpha + beta)
            assert all(verify_signature(HMAC_SECRET, received) for received in receiver.hooks)
            assert not verify_signature("another-secret", receiver.hooks[0])
            # Globex's sink: Globex's only.
            assert sorted(r["request_id"] for r in globex_receiver.records()) == sorted(omega)

        # The Alpha team's Langfuse sink: a trace and a generation per Alpha request, nothing of Beta.
        events = receiver.langfuse_events()
        assert not receiver.refused_events
        assert sorted(e["body"]["id"] for e in events if e["type"] == "trace-create") == sorted(alpha)
        generation = next(e["body"] for e in events if e["type"] == "generation-create")
        assert generation["usageDetails"]["input"] == 7 and generation["costDetails"] == {"total": 0.25}
        # S3: JSONL objects under the prefix with exactly Acme's records.
        objects = s3.objects("gateway-logs")
        assert objects and all(k.startswith("acme/dt=") and k.endswith(".jsonl") for k in objects)
        lines = [orjson.loads(line) for body in objects.values() for line in body.splitlines()]
        assert sorted(line["request_id"] for line in lines) == sorted(alpha + beta)

    # Status for the admin; and no key secret anywhere in what left.
    acme_http.refresh_from_db()
    assert acme_http.delivered_count == 5 and acme_http.last_success_at is not None and not acme_http.last_error
    sent = b"".join(r.body for r in receiver.hooks + receiver.langfuse) + b"".join(objects.values())
    for key in ("alpha_key", "beta_key", "omega_key"):
        assert tenants[key].secret.encode() not in sent
    assert SpendLog.objects.count() == 9


def test_a_failing_sink_is_retried_then_dropped_and_counted_while_others_deliver(tenants, queues, settings):
    settings.SINKS_MAX_ATTEMPTS = 3
    settings.SINKS_BACKOFF_SECONDS = 0  # due again at once: each delivery run is one attempt
    dropped_before = sample("gateway_sink_records_dropped_total", sink_type="http", reason="retries_exhausted")
    with SinkReceiver(status=503) as failing, SinkReceiver() as healthy:
        broken = sink(tenants["acme"], SinkKind.HTTP, url=failing.url + "/hook", secret="s1")
        working = sink(tenants["acme"], SinkKind.HTTP, url=healthy.url + "/hook", secret="s2")
        ids = ingest(tenants["alpha_key"], 4)

        first = sinks_deliver()
        assert first.delivered == 4 and first.failures == 1
        assert sorted(r["request_id"] for r in healthy.records()) == sorted(ids)
        broken.refresh_from_db()
        assert "HTTP 503" in broken.last_error and "attempt 1 of 3" in broken.last_error
        assert broken.dropped_count == 0 and queues.llen(queue_key(broken.pk)) == 4

        sinks_deliver()
        third = sinks_deliver()
        assert third.dropped == 4
        # Three attempts of the same batch (the same delivery id each time), then it was given up.
        assert len(failing.hooks) == 3
        assert len({r.headers["X-Gateway-Delivery"] for r in failing.hooks}) == 1
        assert queues.llen(queue_key(broken.pk)) == 0
        assert sinks_deliver().failures == 0 and len(failing.hooks) == 3  # nothing left to retry

    broken.refresh_from_db()
    working.refresh_from_db()
    assert broken.dropped_count == 4 and "gave up after 3 attempts" in broken.last_error
    assert working.delivered_count == 4 and working.dropped_count == 0
    dropped_after = sample("gateway_sink_records_dropped_total", sink_type="http", reason="retries_exhausted")
    assert dropped_after - dropped_before == 4
    assert SpendLog.objects.count() == 4  # the ledger has every row regardless


def test_backoff_waits_before_the_next_attempt(tenants, queues, settings):
    settings.SINKS_BACKOFF_SECONDS = 60
    with SinkReceiver(status=500) as failing:
        sink(tenants["acme"], SinkKind.HTTP, url=failing.url + "/hook")
        ingest(tenants["alpha_key"], 1)
        sinks_deliver()
        assert sinks_deliver().sinks == 0  # not due: its retry is 30-60 s away
        assert len(failing.hooks) == 1


def test_a_hanging_sink_holds_only_itself(tenants, queues, settings):
    settings.SINKS_TIMEOUT_SECONDS = 0.5
    with SinkReceiver(delay=3) as hanging, SinkReceiver() as healthy:
        stuck = sink(tenants["acme"], SinkKind.HTTP, url=hanging.url + "/hook")
        sink(tenants["acme"], SinkKind.HTTP, url=healthy.url + "/hook")
        ids = ingest(tenants["alpha_key"], 2)
        result = sinks_deliver()
        assert result.delivered == 2 and result.failures == 1
        assert sorted(r["request_id"] for r in healthy.records()) == sorted(ids)
    stuck.refresh_from_db()
    assert "Timeout" in stuck.last_error


def test_a_full_queue_drops_the_newest_records_and_counts_them(tenants, queues, settings):
    settings.SINKS_QUEUE_MAX_RECORDS = 5
    before = sample("gateway_sink_records_dropped_total", sink_type="s3", reason="queue_full")
    full = sink(tenants["acme"], SinkKind.S3, bucket="never-delivered")
    ids = ingest(tenants["alpha_key"], 8)
    assert queues.llen(queue_key(full.pk)) == 5
    kept = [orjson.loads(raw)["request_id"] for raw in queues.lrange(queue_key(full.pk), 0, -1)]
    assert kept == ids[:5]
    full.refresh_from_db()
    assert full.dropped_count == 3 and "queue_full" in full.last_error
    assert sample("gateway_sink_records_dropped_total", sink_type="s3", reason="queue_full") - before == 3


def test_without_a_matching_sink_nothing_is_queued_and_disabled_sinks_get_nothing(tenants, queues):
    off = sink(tenants["globex"], SinkKind.HTTP, url="http://127.0.0.1:9/hook", enabled=False)
    ingest(tenants["omega_key"], 2)
    sinks_enqueue([])
    assert queues.llen(queue_key(off.pk)) == 0
    assert sinks_deliver().sinks == 0


def test_redis_refusing_the_records_drops_them_counted_and_ingestion_goes_on(tenants, queues, settings):
    hook = sink(tenants["acme"], SinkKind.HTTP, url="http://127.0.0.1:9/hook")
    before = sample("gateway_sink_records_dropped_total", sink_type="http", reason="redis_unavailable")
    settings.REDIS_TARGET = RedisTarget.from_url("redis://127.0.0.1:1/0")  # nothing listens there: refused at once
    ids = ingest(tenants["alpha_key"], 3)
    assert SpendLog.objects.filter(request_id__in=ids).count() == 3
    hook.refresh_from_db()
    assert hook.dropped_count == 3 and "redis_unavailable" in hook.last_error
    assert sample("gateway_sink_records_dropped_total", sink_type="http", reason="redis_unavailable") - before == 3


def exploding_hook(rows) -> None:
    raise RuntimeError("a broken ingested-rows hook")


def test_a_failing_hook_neither_fails_ingestion_nor_starves_the_sinks(tenants, queues, settings):
    settings.SPEND_INGESTED_HOOKS = [f"{__name__}.exploding_hook", "apps.sinks.dispatch.sinks_enqueue"]
    hook = sink(tenants["acme"], SinkKind.HTTP, url="http://127.0.0.1:9/hook")
    ids = ingest(tenants["alpha_key"], 2)
    assert SpendLog.objects.filter(request_id__in=ids).count() == 2
    assert queues.llen(queue_key(hook.pk)) == 2


def test_a_deleted_or_disabled_sink_takes_its_queue_with_it(tenants, queues, django_user_model):
    actor = Actor(user=django_user_model.objects.create(username="root", is_superuser=True, is_staff=True))
    deleted = sink(tenants["acme"], SinkKind.HTTP, url="http://127.0.0.1:9/hook", secret="s1")
    disabled = sink(tenants["acme"], SinkKind.HTTP, url="http://127.0.0.1:9/other", secret="s2")
    ingest(tenants["alpha_key"], 2)
    assert queues.llen(queue_key(deleted.pk)) == queues.llen(queue_key(disabled.pk)) == 2
    log_sink_delete(actor=actor, sink=deleted)
    log_sink_update(actor=actor, sink=disabled, enabled=False)
    assert queues.llen(queue_key(deleted.pk)) == queues.llen(queue_key(disabled.pk)) == 0
