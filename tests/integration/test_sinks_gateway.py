"""Log sinks end to end: /v1 requests through the real gateway (uvicorn) reach a real Celery worker (beat inside),
whose ingestion queues them and whose ``sinks.deliver`` job sends them to an HTTP endpoint, a Langfuse-shaped API
and moto's S3 server, each only its tenant's records; the response's x-request-id is the record's request id."""

from __future__ import annotations

import urllib.request

import orjson
import pytest
import redis
from django.conf import settings

from apps.sinks.models import LogSink, SinkKind
from apps.sinks.queue import PREFIX
from apps.sinks.schedules import schedules_setup as sinks_schedules_setup
from apps.spend.outbox import STREAM_KEY
from apps.spend.schedules import schedules_setup
from tests.factories import DeploymentFactory, OrganizationFactory, TeamFactory, VirtualKeyFactory
from tests.integration.sinks_support import MotoS3, SinkReceiver, verify_signature
from tests.integration.spend_processes import CeleryWorker, Gateway, OpenAIUpstream, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]

LANGFUSE = ("pk-lf-e2e", "sk-lf-e2e-secret-0123456789")
HMAC_SECRET = "whsec-e2e-0123456789abcdef"


@pytest.fixture
def stack(transactional_db, tmp_path):
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(STREAM_KEY, *client.scan_iter(f"{PREFIX}:*"))
    schedules_setup()
    sinks_schedules_setup()
    with OpenAIUpstream() as upstream, SinkReceiver(langfuse_keys=LANGFUSE) as receiver, MotoS3(tmp_path) as s3:
        DeploymentFactory(model_name="sink-model", provider="openai", model="ok", api_base=upstream.url,
                          input_cost_per_token="0.001", output_cost_per_token="0.002")  # fmt: skip
        s3.client().create_bucket(Bucket="gateway-logs")
        worker = CeleryWorker(tmp_path, SPEND_INGEST_BATCH_SIZE="100")
        worker.start()
        try:
            with Gateway(tmp_path, workers=1, PROXY_SHED_LOOP_LAG_MS="0") as gateway:
                yield gateway, worker, receiver, s3
        finally:
            worker.stop()


def chat(gateway: Gateway, secret: str) -> str:
    body = orjson.dumps({"model": "sink-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    request = urllib.request.Request(
        f"{gateway.url}/v1/chat/completions",
        data=body,
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return response.headers["x-request-id"]


def test_v1_requests_land_in_each_kind_of_sink_of_their_tenant_only(stack):
    gateway, worker, receiver, s3 = stack
    acme, globex = OrganizationFactory(name="Acme"), OrganizationFactory(name="Globex")
    alpha_key = VirtualKeyFactory(team=TeamFactory(organization=acme, name="Alpha"), alias="alpha-app")
    omega_key = VirtualKeyFactory(team=TeamFactory(organization=globex, name="Omega"), alias="omega-app")

    http_sink = LogSink(organization=acme, kind=SinkKind.HTTP, name="acme hook", url=receiver.url + "/hook")
    http_sink.set_secret(HMAC_SECRET)
    langfuse_sink = LogSink(organization=acme, team=alpha_key.team, kind=SinkKind.LANGFUSE, name="alpha langfuse",
                            url=receiver.url, access_id=LANGFUSE[0])  # fmt: skip
    langfuse_sink.set_secret(LANGFUSE[1])
    s3_sink = LogSink(organization=globex, kind=SinkKind.S3, name="globex s3", url=s3.url, bucket="gateway-logs",
                      prefix="globex", access_id="test-access")  # fmt: skip
    s3_sink.set_secret("test-secret")
    for sink in (http_sink, langfuse_sink, s3_sink):
        sink.save()

    acme_ids = [chat(gateway, alpha_key.secret) for _ in range(3)]
    globex_ids = [chat(gateway, omega_key.secret) for _ in range(2)]

    def s3_ids() -> list[str]:
        bodies = s3.objects("gateway-logs").values()
        return [orjson.loads(line)["request_id"] for body in bodies for line in body.splitlines()]

    def arrived() -> bool:
        traces = [e for e in receiver.langfuse_events() if e["type"] == "trace-create"]
        return len(receiver.records()) >= 3 and len(traces) >= 3 and len(s3_ids()) >= 2

    wait_until(arrived, timeout=90, message="the records did not reach every sink", worker=worker)

    assert sorted(r["request_id"] for r in receiver.records()) == sorted(acme_ids)
    assert all(verify_signature(HMAC_SECRET, received) for received in receiver.hooks)
    record = receiver.records()[0]
    assert (record["organization_id"], record["key_alias"], record["model"]) == (acme.pk, "alpha-app", "sink-model")
    assert (record["prompt_tokens"], record["status"], "metadata" in record) == (5, 200, False)
    traces = sorted(e["body"]["id"] for e in receiver.langfuse_events() if e["type"] == "trace-create")
    assert traces == sorted(acme_ids) and not receiver.refused_events
    assert sorted(s3_ids()) == sorted(globex_ids)

    for sink in (http_sink, langfuse_sink, s3_sink):
        sink.refresh_from_db()
        assert sink.last_success_at is not None and sink.dropped_count == 0, (sink, sink.last_error)
    everything = b"".join(r.body for r in receiver.hooks + receiver.langfuse)
    assert alpha_key.secret.encode() not in everything and omega_key.secret.encode() not in everything
