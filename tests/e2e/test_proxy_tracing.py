"""OpenTelemetry traces, end to end: a real gateway (uvicorn) exporting to a real OTLP receiver process.

The receiver (tests/support/otlp_receiver.py) decodes the protobuf ``ExportTraceServiceRequest`` the
gateway sends over OTLP/HTTP or OTLP/gRPC; the mock upstream records the headers it was sent. What a
user of a trace backend sees is asserted: the client's trace continued, the GenAI and gateway
attributes, one CLIENT span per upstream attempt whose ``traceparent`` the upstream received, refusals
and retries as events, no prompt text unless the team opted in, the trace id in the ledger's event.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request

import orjson
import pytest
from django.conf import settings

from apps.proxy.models import ModelGroup
from apps.spend.schedules import schedules_setup
from tests.factories import TeamFactory
from tests.integration.spend_processes import CeleryWorker
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import MASTER_KEY, GatewayServer, deploy, http, make_key, spend_event, unique_name
from tests.support.processes import ServerProcess, free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.e2e,
    pytest.mark.skipif(not settings.REDIS_URL, reason="needs the Redis started by scripts/test.sh"),
]

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SERVER, CLIENT = 2, 3  # OTLP SpanKind values
PROMPT = "the secret recipe is 42 cloves of garlic"


class OtlpReceiver(ServerProcess):
    """tests/support/otlp_receiver.py in its own process: OTLP/HTTP and OTLP/gRPC listeners on free ports."""

    def __init__(self) -> None:
        self.http_port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        script = os.path.join(os.path.dirname(__file__), "..", "support", "otlp_receiver.py")
        super().__init__(
            [sys.executable, script, str(self.http_port), str(self.grpc_port)],
            env={**os.environ},
            ready_url=self.url + "/health",
            log_path=f"/tmp/otlp-receiver-{self.http_port}.log",
        )

    def spans(self) -> list[dict]:
        with urllib.request.urlopen(self.url + "/spans", timeout=5) as response:
            return orjson.loads(response.read())

    def wait_for(self, predicate, *, count: int = 1, timeout: float = 20.0) -> list[dict]:
        """Spans matching ``predicate`` once at least ``count`` of them arrived (batches come every 200 ms)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [s for s in self.spans() if predicate(s)]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"expected {count} matching spans, got {[s['name'] for s in self.spans()]}")


def traced_env(receiver: OtlpReceiver, protocol: str = "http/protobuf", **extra: str) -> dict[str, str]:
    endpoint = f"http://127.0.0.1:{receiver.grpc_port if protocol == 'grpc' else receiver.http_port}"
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_SERVICE_NAME": "gateway-under-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=e2e",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "PROXY_SHED_LOOP_LAG_MS": "0",
        **extra,
    }


@pytest.fixture(scope="module")
def receiver():
    with OtlpReceiver() as server:
        yield server


@pytest.fixture(scope="module")
def traced(django_db_setup, django_db_blocker, receiver):
    with django_db_blocker.unblock(), GatewayServer(**traced_env(receiver)) as server:
        yield server


def _model(traced, upstream) -> str:
    name = unique_name()
    deploy(
        traced,
        {
            "model_name": name,
            "provider": "openai",
            "model": "gpt-up",
            "api_base": upstream.url,
            "input_cost_per_token": "0.000001",
            "output_cost_per_token": "0.000002",
        },
    )
    return name


def _chat(traced, key: str, model: str, *, traceparent: str | None = None, **body):
    headers = {"Authorization": f"Bearer {key}"}
    if traceparent:
        headers["traceparent"] = traceparent
        headers["tracestate"] = "vendor=abc"
    payload = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 50, **body}
    return http("POST", traced.v1 + "/chat/completions", json=payload, headers=headers)


def _request_spans(receiver, trace_id: str, count: int = 2) -> tuple[dict, list[dict]]:
    spans = receiver.wait_for(lambda s: s["trace_id"] == trace_id, count=count)
    server = [s for s in spans if s["kind"] == SERVER]
    assert len(server) == 1, spans
    return server[0], sorted((s for s in spans if s["kind"] == CLIENT), key=lambda s: s["start_ns"])


def test_a_request_continues_the_client_trace_with_genai_attributes_and_the_upstream_joins_it(
    traced, receiver, upstream, tenant
):
    model = _model(traced, upstream)
    response = _chat(traced, tenant.alice_key.secret, model, traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
    assert response.status_code == 200, response.text

    server, clients = _request_spans(receiver, CLIENT_TRACE)
    assert server["parent_span_id"] == CLIENT_SPAN  # the client's span is the parent
    assert server["name"] == f"chat {model}"
    assert server["resource"]["service.name"] == "gateway-under-test"
    assert server["resource"]["deployment.environment"] == "e2e"
    assert server["protocol"] == "http/protobuf"
    attributes = server["attributes"]
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == model
    assert attributes["gen_ai.response.model"]
    assert attributes["gen_ai.request.max_tokens"] == 50
    assert attributes["gen_ai.usage.input_tokens"] == 11  # what the mock reports
    assert attributes["gen_ai.usage.output_tokens"] == 7
    assert attributes["gateway.key.alias"] == "alice-key"
    assert attributes["gateway.team.id"] == tenant.alpha.pk
    assert attributes["gateway.organization.id"] == tenant.acme.pk
    assert attributes["gateway.cost"] == pytest.approx(11 * 1e-6 + 7 * 2e-6)
    assert attributes["gateway.request.id"] == response.headers["x-request-id"]
    assert attributes["http.response.status_code"] == 200
    assert "gen_ai.input.messages" not in attributes and "gen_ai.output.messages" not in attributes
    assert PROMPT not in orjson.dumps(server).decode()

    (client,) = clients
    assert client["parent_span_id"] == server["span_id"]
    assert client["attributes"]["gen_ai.request.model"] == "gpt-up"
    assert client["attributes"]["server.address"] == "127.0.0.1"
    assert client["attributes"]["gateway.deployment.id"] == attributes["gateway.deployment.id"]
    # The upstream received this attempt's trace context: same trace, the CLIENT span as its parent.
    sent = upstream.last("/chat/completions")["headers"]
    assert sent["traceparent"] == f"00-{CLIENT_TRACE}-{client['span_id']}-01"
    assert sent["tracestate"] == "vendor=abc"
    # The ledger's event carries the trace id (the request explorer links to the trace with it).
    assert spend_event(response.headers["x-request-id"])["trace_id"] == CLIENT_TRACE


def test_a_request_without_traceparent_starts_its_own_trace(traced, receiver, upstream, tenant):
    model = _model(traced, upstream)
    response = _chat(traced, tenant.alice_key.secret, model)
    assert response.status_code == 200
    trace_id = spend_event(response.headers["x-request-id"])["trace_id"]
    assert len(trace_id) == 32 and trace_id != CLIENT_TRACE
    server, _clients = _request_spans(receiver, trace_id)
    assert server["parent_span_id"] == ""
    assert upstream.last("/chat/completions")["headers"]["traceparent"].split("-")[1] == trace_id


def test_an_unsampled_client_trace_records_nothing_but_still_reaches_the_upstream(traced, receiver, upstream, tenant):
    model = _model(traced, upstream)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    response = _chat(traced, tenant.alice_key.secret, model, traceparent=f"00-{trace_id}-b7ad6b7169203331-00")
    assert response.status_code == 200
    assert upstream.last("/chat/completions")["headers"]["traceparent"] == f"00-{trace_id}-b7ad6b7169203331-00"
    assert spend_event(response.headers["x-request-id"])["trace_id"] == ""
    # A later sampled request's spans arrive; none ever came for the unsampled one.
    _chat(traced, tenant.alice_key.secret, model, traceparent=f"00-{'1' * 32}-{'2' * 16}-01")
    receiver.wait_for(lambda s: s["trace_id"] == "1" * 32, count=2)
    assert not [s for s in receiver.spans() if s["trace_id"] == trace_id]


def test_a_team_that_opted_in_gets_prompt_and_streamed_completion_text(traced, receiver, upstream, tenant):
    model = _model(traced, upstream)
    team = TeamFactory(organization=tenant.acme, name="Opted in", trace_content=True)
    key = make_key(team, alias="content-key")
    trace_id = "5" * 32
    headers = {"Authorization": f"Bearer {key.secret}", "traceparent": f"00-{trace_id}-{'6' * 16}-01"}
    payload = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    response = http("POST", traced.v1 + "/chat/completions", json=payload, headers=headers)
    assert response.status_code == 200
    streamed = "".join(
        (orjson.loads(line[6:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for line in response.text.splitlines()
        if line.startswith("data: {")
    )
    server, _clients = _request_spans(receiver, trace_id)
    assert PROMPT in server["attributes"]["gen_ai.input.messages"]
    assert server["attributes"]["gen_ai.output.messages"] == streamed != ""
    assert server["attributes"]["gateway.stream"] is True


def test_a_limit_refusal_is_an_event_on_the_span(traced, receiver, upstream, tenant):
    model = _model(traced, upstream)
    key = make_key(tenant.alpha, tenant.alice, alias="one-rpm", rpm_limit=1)
    assert _chat(traced, key.secret, model).status_code == 200
    trace_id = "7" * 32
    refused = _chat(traced, key.secret, model, traceparent=f"00-{trace_id}-{'8' * 16}-01")
    assert refused.status_code == 429
    (server,) = receiver.wait_for(lambda s: s["trace_id"] == trace_id)
    assert server["attributes"]["http.response.status_code"] == 429
    assert server["attributes"]["error.type"] == "rate_limit:requests"
    (event,) = [e for e in server["events"] if e["name"] == "gateway.rate_limited"]
    assert event["attributes"]["gateway.limit.type"] == "requests"
    assert event["attributes"]["gateway.limit.scope"] == "key"


def test_retries_are_client_spans_and_events(traced, receiver, upstream, tenant):
    name = unique_name()
    failing, healthy = deploy(
        traced,
        {"model_name": name, "provider": "openai", "model": "fail-500", "api_base": upstream.url, "priority": 0},
        {"model_name": name, "provider": "openai", "model": "gpt-up", "api_base": upstream.url, "priority": 1},
    )
    trace_id = "9" * 32
    response = _chat(traced, tenant.alice_key.secret, name, traceparent=f"00-{trace_id}-{'a' * 16}-01")
    assert response.status_code == 200, response.text
    server, clients = _request_spans(receiver, trace_id, count=3)
    assert [c["attributes"]["gateway.deployment.id"] for c in clients] == [failing.pk, healthy.pk]
    assert clients[0]["status_code"] == 2 and clients[0]["attributes"]["http.response.status_code"] == 500
    assert server["attributes"]["gateway.retries"] == 1
    assert server["attributes"]["gateway.deployment.id"] == healthy.pk
    (event,) = [e for e in server["events"] if e["name"] == "gateway.retry"]
    assert event["attributes"]["gateway.deployment.id"] == failing.pk


def test_a_fallback_to_another_model_group_is_an_event(traced, receiver, upstream, tenant):
    primary, backup = unique_name(), unique_name()
    ModelGroup.objects.create(
        model_name=primary, fallbacks=[backup], num_retries=0
    )  # before the reload deploy waits for
    deploy(
        traced,
        {"model_name": primary, "provider": "openai", "model": "fail-500", "api_base": upstream.url},
        {"model_name": backup, "provider": "openai", "model": "backup-up", "api_base": upstream.url},
    )
    trace_id = "3" * 32
    response = _chat(traced, tenant.alice_key.secret, primary, traceparent=f"00-{trace_id}-{'4' * 16}-01")
    assert response.status_code == 200, response.text
    server, clients = _request_spans(receiver, trace_id, count=3)
    assert [c["attributes"]["gen_ai.request.model"] for c in clients] == ["fail-500", "backup-up"]
    (event,) = [e for e in server["events"] if e["name"] == "gateway.fallback"]
    assert event["attributes"] == {"gateway.fallback.from": primary, "gateway.fallback.to": backup}
    assert server["attributes"]["gen_ai.request.model"] == primary
    assert server["attributes"]["gen_ai.response.model"] == "backup-up"


def test_an_unknown_key_is_traced_as_a_401(traced, receiver):
    trace_id = "b" * 32
    response = http(
        "POST",
        traced.v1 + "/chat/completions",
        json={"model": "x", "messages": [{"role": "user", "content": PROMPT}]},
        headers={"Authorization": "Bearer sk-nope", "traceparent": f"00-{trace_id}-{'c' * 16}-01"},
    )
    assert response.status_code == 401
    (server,) = receiver.wait_for(lambda s: s["trace_id"] == trace_id)
    assert server["attributes"]["http.response.status_code"] == 401
    assert "sk-nope" not in orjson.dumps(server).decode()


def test_django_views_are_traced_by_the_django_instrumentation(traced, receiver):
    trace_id = "d" * 32
    request = urllib.request.Request(
        traced.url + "/api/v1/organizations/",
        headers={"Authorization": f"Bearer {MASTER_KEY}", "traceparent": f"00-{trace_id}-{'e' * 16}-01"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    (span,) = receiver.wait_for(lambda s: s["trace_id"] == trace_id)
    assert span["scope"].startswith("opentelemetry.instrumentation.django")
    assert span["parent_span_id"] == "e" * 16
    assert span["kind"] == SERVER


def test_grpc_export_and_spans_still_queued_at_shutdown_are_flushed(
    django_db_setup, django_db_blocker, receiver, upstream, tenant
):
    # A schedule far longer than the test: the spans can only arrive through the shutdown's flush.
    env = traced_env(receiver, "grpc", OTEL_BSP_SCHEDULE_DELAY="600000")
    trace_id = "f" * 32
    with django_db_blocker.unblock(), GatewayServer(**env) as server:
        model = _model(server, upstream)
        response = _chat(server, tenant.alice_key.secret, model, traceparent=f"00-{trace_id}-{'1' * 16}-01")
        assert response.status_code == 200
        time.sleep(0.5)
        assert not [s for s in receiver.spans() if s["trace_id"] == trace_id]
    spans = receiver.wait_for(lambda s: s["trace_id"] == trace_id, count=2, timeout=5)
    assert {s["protocol"] for s in spans} == {"grpc"}
    assert {s["kind"] for s in spans} == {SERVER, CLIENT}


def test_with_no_endpoint_nothing_is_traced_or_sent_upstream(django_db_setup, django_db_blocker, upstream, tenant):
    with django_db_blocker.unblock(), GatewayServer(PROXY_SHED_LOOP_LAG_MS="0") as server:
        model = _model(server, upstream)
        response = _chat(server, tenant.alice_key.secret, model, traceparent=f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
        assert response.status_code == 200
        assert "traceparent" not in {h.lower() for h in upstream.last("/chat/completions")["headers"]}
        assert spend_event(response.headers["x-request-id"])["trace_id"] == ""


def test_celery_tasks_run_by_a_worker_are_traced(transactional_db, receiver, tmp_path):
    schedules_setup()  # the periodic spend ingestion the embedded beat dispatches every few seconds
    worker = CeleryWorker(tmp_path, **traced_env(receiver))
    worker.start()
    try:
        spans = receiver.wait_for(
            lambda s: s["scope"].startswith("opentelemetry.instrumentation.celery") and s["name"].startswith("run/"),
            timeout=60,
        )
    finally:
        worker.stop()
    assert spans[0]["resource"]["service.name"] == "gateway-under-test"
    assert spans[0]["attributes"]["celery.task_name"]
