"""The /v1 span builder (apps/proxy/tracing.py) on the SDK's in-memory exporter, and tracing off.

The wire format, the receiver and the whole gateway are tests/e2e/test_proxy_tracing.py; here: what a
malformed ``traceparent`` becomes, what the sampler decides, which attributes a span carries and
that prompt text needs the team's opt-in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from apps.proxy.context import CallResult, KeyContext, RequestContext
from apps.proxy.providers import Chunk
from apps.proxy.registry import Deployment
from apps.proxy.relay import _content_text
from apps.proxy.tracing import Tracing, parse_traceparent
from apps.spend.events import SpendEvent
from apps.spend.rows import ledger_row

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
DEP = Deployment(
    id=5, model_name="gpt", provider="anthropic", model="claude-x", api_base="https://api.example.com:8443"
)


def _tracing() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracing(SimpleSpanProcessor(exporter)), exporter


def _ctx(*, trace_content: bool = False) -> RequestContext:
    key = KeyContext(
        key_id=1,
        key_alias="alice-key",
        team_id=2,
        team_name="Alpha",
        organization_id=3,
        organization_name="Acme",
        user_id=4,
        allowed_models=None,
        scopes=(),
        trace_content=trace_content,
    )
    ctx = RequestContext(
        request_id="req_1", key=key, route="/v1/chat/completions", model="gpt", llm_provider="anthropic"
    )
    ctx.body = {"model": "gpt", "messages": [{"role": "user", "content": "a secret prompt"}], "max_tokens": 9}
    return ctx


def _run(tracing: Tracing, ctx: RequestContext, headers: dict[bytes, bytes]):
    trace = tracing.request("chat", "POST", headers)
    trace.ctx = ctx
    attempt = trace.attempt(DEP, "chat")
    attempt.end(200)
    trace.output = "the answer"
    trace.result = CallResult(status=200, prompt_tokens=3, completion_tokens=4, cost=Decimal("0.5"))
    trace.end()
    return trace, attempt


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"garbage",
        f"00-{'0' * 32}-{PARENT}-01".encode(),  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01".encode(),  # all-zero parent
        f"ff-{TRACE}-{PARENT}-01".encode(),  # the forbidden version
        f"00-{TRACE}-{PARENT}-01-extra".encode(),  # version 00 has exactly four fields
        f"00-{TRACE[:-1]}x-{PARENT}-01".encode(),
        f"00-0x{TRACE[2:]}-{PARENT}-01".encode(),
        "00-ü".encode() * 20,
    ],
)
def test_a_malformed_traceparent_is_ignored(value):
    assert parse_traceparent(value) is None


def test_a_valid_traceparent_is_read_and_a_future_version_may_carry_more():
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-01".encode()) == (int(TRACE, 16), int(PARENT, 16), 1)
    assert parse_traceparent(f"cc-{TRACE.upper()}-{PARENT}-08-what-ever".encode()) == (
        int(TRACE, 16),
        int(PARENT, 16),
        0,
    )


def test_spans_carry_the_genai_and_gateway_attributes_but_no_text_without_opt_in():
    tracing, exporter = _tracing()
    trace, attempt = _run(tracing, _ctx(), {b"traceparent": f"00-{TRACE}-{PARENT}-01".encode()})
    client, server = exporter.get_finished_spans()
    assert server.parent.span_id == int(PARENT, 16) and server.context.trace_id == int(TRACE, 16)
    assert client.parent.span_id == server.context.span_id
    assert attempt.traceparent == f"00-{TRACE}-{client.context.span_id:016x}-01"
    assert server.name == "chat gpt" and client.name == "chat claude-x"
    assert dict(server.attributes) == {
        "gen_ai.operation.name": "chat",
        "http.request.method": "POST",
        "http.route": "/v1/chat/completions",
        "gateway.request.id": "req_1",
        "gateway.key.alias": "alice-key",
        "gateway.key.id": 1,
        "gateway.team.id": 2,
        "gateway.team.name": "Alpha",
        "gateway.organization.id": 3,
        "gateway.organization.name": "Acme",
        "gateway.user.id": 4,
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "gpt",
        "gen_ai.request.max_tokens": 9,
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.output_tokens": 4,
        "gateway.cost": 0.5,
        "http.response.status_code": 200,
    }
    assert client.attributes["server.address"] == "api.example.com"
    assert client.attributes["server.port"] == 8443
    assert client.attributes["gen_ai.provider.name"] == "anthropic"
    assert trace.trace_id_hex == TRACE


def test_a_team_that_opted_in_gets_prompt_and_completion_text():
    tracing, exporter = _tracing()
    _run(tracing, _ctx(trace_content=True), {})
    _client, server = exporter.get_finished_spans()
    assert "a secret prompt" in server.attributes["gen_ai.input.messages"]
    assert server.attributes["gen_ai.output.messages"] == "the answer"
    assert server.parent is None  # no traceparent: a new trace


def test_an_unsampled_parent_records_nothing_and_the_upstream_gets_the_clients_context():
    tracing, exporter = _tracing()
    trace, attempt = _run(tracing, _ctx(), {b"traceparent": f"00-{TRACE}-{PARENT}-00".encode()})
    assert exporter.get_finished_spans() == ()
    assert not trace.recording
    assert attempt.traceparent == f"00-{TRACE}-{PARENT}-00"


def test_the_sampler_comes_from_otel_traces_sampler(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    tracing, exporter = _tracing()
    assert not tracing.parent_decides
    _run(tracing, _ctx(), {})
    assert exporter.get_finished_spans() == ()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    tracing, exporter = _tracing()
    _run(tracing, _ctx(), {b"traceparent": f"00-{TRACE}-{PARENT}-00".encode()})  # always_on ignores the parent
    assert len(exporter.get_finished_spans()) == 2


def test_the_ledger_keeps_a_trace_id_only_when_it_is_one():
    def row(trace_id):
        return ledger_row(SpendEvent(request_id="r", created_at=0, route="/", status=200, trace_id=trace_id), None)

    assert row(TRACE).trace_id == TRACE
    assert row(TRACE.upper()).trace_id == TRACE
    for bad in ("", "0" * 32, "xyz", TRACE + "0", "0x" + TRACE[2:], None, 5):
        assert row(bad).trace_id == ""


def test_with_no_endpoint_the_gateway_never_loads_the_trace_sdk():
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    code = (
        "import sys, gateway_project.asgi, gateway_project.celery;"
        "loaded = [m for m in ('opentelemetry.sdk.trace', 'apps.proxy.tracing', 'apps.common.otel',"
        " 'opentelemetry.instrumentation.django') if m in sys.modules];"
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_streamed_completion_text_is_read_from_every_stream_shape():
    chat = Chunk({"choices": [{"delta": {"content": "Hel"}}, {"delta": {"content": "lo"}}]})
    completions = Chunk({"choices": [{"text": "lo"}]})
    responses = Chunk({"type": "response.output_text.delta", "delta": "Hi"})
    anthropic = ("content_block_delta", b'{"type":"content_block_delta","delta":{"type":"text_delta","text":"Yo"}}')
    assert [_content_text(i) for i in (chat, completions, responses, anthropic)] == ["Hello", "lo", "Hi", "Yo"]
    assert _content_text(("ping", b"not json")) == "" and _content_text(("x", b"[1]")) == ""
