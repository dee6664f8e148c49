"""The official ``openai`` JavaScript SDK (npm) against a real gateway, unchanged: only ``baseURL`` and ``apiKey``.

Each test runs tests/e2e/js/sdk_scenarios.mjs with Node as a subprocess; the script prints what the SDK
returned (parsed objects, raw headers, typed errors) as JSON and the assertions are made here. The gateway
is a uvicorn subprocess on the test Postgres/Redis, the upstream the local mock server over real HTTP.
scripts/test.sh installs Node and the pinned SDK (tests/e2e/js/package-lock.json) with ``npm ci``.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import deploy, deploy_priced_model, make_key, spend_event, unique_name

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

JS_DIR = Path(__file__).parent / "js"
SCRIPT = JS_DIR / "sdk_scenarios.mjs"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def node_sdk(gateway, api_key: str, scenario: str, **config):
    """Run one scenario of the JS script against ``gateway``; return the JSON it printed."""
    node = shutil.which("node")
    assert node, "node is not installed: run the tests through scripts/test.sh, which installs it"
    assert (JS_DIR / "node_modules" / "openai").is_dir(), "the JS SDK is not installed: scripts/test.sh runs npm ci"
    payload = orjson.dumps({"scenario": scenario, "baseURL": gateway.v1, "apiKey": api_key, **config}).decode()
    done = subprocess.run(
        [node, str(SCRIPT), payload], cwd=JS_DIR, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"node failed:\n{done.stderr}\n{done.stdout}\n{gateway.output()}"
    return orjson.loads(done.stdout)


def float32(values: list[float]) -> list[float]:
    """``values`` as the SDK sees them after decoding base64 little-endian float32."""
    return list(struct.unpack(f"<{len(values)}f", struct.pack(f"<{len(values)}f", *values)))


@pytest.fixture
def model(gateway, upstream):
    return deploy_priced_model(gateway, upstream)


def test_chat_completion_content_usage_id_and_gateway_headers(gateway, model, upstream, tenant):
    out = node_sdk(gateway, tenant.alice_key.secret, "chat", model=model, prompt="hi from node")
    assert out["content"] == "echo: hi from node" and out["role"] == "assistant"
    assert (out["object"], out["id"], out["finishReason"]) == ("chat.completion", "chatcmpl-up1", "stop")
    assert out["model"] == "gpt-up"  # an OpenAI upstream's answer is relayed as it came
    assert out["usage"]["prompt_tokens"] == 11 and out["usage"]["completion_tokens"] == 7
    assert out["usage"]["total_tokens"] == 18
    assert out["status"] == 200 and out["contentType"].startswith("application/json")
    # withResponse(): the raw headers, and the request id the SDK attaches to the parsed object.
    request_id = out["headers"]["x-request-id"]
    assert request_id.startswith("req_") and out["requestId"] == out["dataRequestId"] == request_id
    # 11 prompt tokens x 1e-6 + 7 completion tokens x 2e-6
    assert out["headers"]["x-gateway-cost"] == "0.000025"
    assert out["headers"]["x-gateway-deployment"].endswith(":openai/gpt-up")
    assert float(out["headers"]["x-gateway-overhead-ms"]) >= 0
    # asResponse(): the fetch Response itself.
    assert out["asResponse"]["status"] == 200
    assert out["asResponse"]["headers"]["x-request-id"].startswith("req_")
    assert out["asResponse"]["headers"]["x-request-id"] != request_id
    assert out["asResponse"]["body"]["choices"][0]["message"]["content"] == "echo: raw"
    sent = upstream.last("/chat/completions")
    assert sent["body"]["model"] == "gpt-up" and sent["headers"]["Authorization"] == "Bearer sk-upstream-secret"
    event = spend_event(request_id)
    assert (event["prompt_tokens"], event["completion_tokens"]) == (11, 7)


def test_stream_with_include_usage_chunk_by_chunk_and_with_the_stream_helper(gateway, model, upstream, tenant):
    out = node_sdk(gateway, tenant.alice_key.secret, "stream", model=model, prompt="hello big world")
    assert out["contentType"].startswith("text/event-stream")
    assert out["headers"]["x-request-id"].startswith("req_")
    assert out["objects"] == ["chat.completion.chunk"] and out["ids"] == ["chatcmpl-up1"]
    assert out["text"] == "echo: hello big world"
    assert out["finishReasons"] == ["stop"]
    # include_usage: exactly one usage chunk, the last one, with no choices.
    assert out["usageChunks"] == 1
    assert out["last"]["choices"] == []
    assert (out["last"]["usage"]["prompt_tokens"], out["last"]["usage"]["completion_tokens"]) == (11, 7)
    helper = out["helper"]
    assert helper["deltas"] == helper["content"] == "echo: hello big world"
    assert helper["finishReason"] == "stop" and helper["usage"]["completion_tokens"] == 7
    assert upstream.last("/chat/completions")["body"]["stream_options"] == {"include_usage": True}


def test_tool_calls_pass_through_plain_streamed_and_the_tool_result_turn(gateway, model, upstream, tenant):
    out = node_sdk(gateway, tenant.alice_key.secret, "tools", model=model, tools=TOOLS)
    expected_call = {
        "id": "call_abc123",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    assert out["finishReason"] == "tool_calls" and out["toolCalls"] == [expected_call]
    assert out["streamed"]["finishReason"] == "tool_calls"
    assert out["streamed"]["toolCalls"] == [expected_call]  # the helper assembled the deltas
    assert out["afterTool"] == {"content": "echo: weather in Paris?", "finishReason": "stop"}
    sent = upstream.last("/chat/completions")["body"]
    assert sent["tools"] == TOOLS
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": "call_abc123", "content": '{"celsius": 21}'}
    assert sent["messages"][-2]["tool_calls"] == [expected_call]


def test_embeddings_as_floats_and_in_the_sdks_default_base64(gateway, model, upstream, tenant):
    out = node_sdk(
        gateway,
        tenant.alice_key.secret,
        "embeddings",
        model=model,
        input=["a", "b"],
        variants={"float": {"encoding_format": "float"}},
    )
    result = out["float"]
    assert result["object"] == "list" and [d["index"] for d in result["data"]] == [0, 1]
    assert all(d["embedding"] == [0.1, 0.2, 0.3] for d in result["data"])
    assert result["usage"]["prompt_tokens"] == 8
    assert upstream.last("/embeddings")["body"]["encoding_format"] == "float"
    # The built-in mock provider answers base64 itself when asked: the SDK must decode the same vector.
    local = unique_name("mock")
    deploy(gateway, {"model_name": local, "provider": "mock", "model": "mock-up"})
    out = node_sdk(
        gateway,
        tenant.alice_key.secret,
        "embeddings",
        model=local,
        input="same text",
        variants={"default": {}, "float": {"encoding_format": "float"}},
    )
    floats = out["float"]["data"][0]["embedding"]
    assert len(floats) == 8 and any(v != 0 for v in floats)
    assert out["default"]["data"][0]["embedding"] == float32(floats)


def test_embeddings_from_gemini_decode_in_the_sdks_default_base64(gateway, upstream, tenant):
    """The gateway builds Gemini's answer itself, so it must honour the SDK's ``encoding_format: base64``."""
    name = unique_name("gemini")
    deploy(
        gateway,
        {"model_name": name, "provider": "gemini", "model": "emb-up", "api_base": upstream.base + "/gemini"},
    )
    out = node_sdk(
        gateway,
        tenant.alice_key.secret,
        "embeddings",
        model=name,
        input=["a", "b"],
        variants={"default": {}, "float": {"encoding_format": "float"}},
    )
    assert [d["embedding"] for d in out["float"]["data"]] == [[0.5, 0.25], [0.5, 0.25]]
    assert [d["embedding"] for d in out["default"]["data"]] == [[0.5, 0.25], [0.5, 0.25]]


def test_models_list_only_what_the_key_may_use(gateway, upstream, tenant):
    allowed, other = unique_name(), unique_name()
    deploy(
        gateway,
        {"model_name": allowed, "provider": "openai", "model": "gpt-up", "api_base": upstream.url},
        {"model_name": other, "provider": "openai", "model": "gpt-up", "api_base": upstream.url},
    )
    key = make_key(tenant.alpha, tenant.alice, allowed_models=[allowed])
    out = node_sdk(gateway, key.secret, "models", model=allowed, missing=other)
    assert out["ids"] == [allowed]
    assert out["retrieved"] == {"id": allowed, "object": "model", "created": 0, "owned_by": "openai"}
    assert out["missing"]["instanceOf"] == ["NotFoundError"] and out["missing"]["status"] == 404
    # Without a model allow-list the key sees both.
    out = node_sdk(gateway, tenant.alice_key.secret, "models", model=other, missing=unique_name())
    assert {allowed, other} <= set(out["ids"])


def test_typed_errors_for_bad_key_unknown_model_and_forbidden_model(gateway, model, tenant):
    key = make_key(tenant.alpha, tenant.alice, allowed_models=[model])
    other = unique_name()
    deploy(gateway, {"model_name": other, "provider": "mock", "model": "mock-up"})
    calls = [
        {"label": "bad key", "apiKey": "sk-gw-not-a-key", "model": model},
        {"label": "bad key streaming", "apiKey": "sk-gw-not-a-key", "model": model, "stream": True},
        {"label": "unknown model", "apiKey": key.secret, "model": "no-such-model"},
        {"label": "forbidden model", "apiKey": key.secret, "model": other},
        {"label": "allowed", "apiKey": key.secret, "model": model},
    ]
    out = {r["label"]: r for r in node_sdk(gateway, key.secret, "errors", calls=calls)}
    for label in ("bad key", "bad key streaming"):
        error = out[label]["error"]
        assert error["instanceOf"] == ["AuthenticationError"] and error["className"] == "AuthenticationError"
        assert (error["status"], error["code"], error["type"]) == (401, "invalid_api_key", "authentication_error")
        assert error["message"] == "401 Invalid API key."
        assert error["requestID"].startswith("req_")
    unknown = out["unknown model"]["error"]
    assert unknown["instanceOf"] == ["NotFoundError"] and unknown["status"] == 404
    assert (unknown["code"], unknown["param"]) == ("model_not_found", "model")
    assert "no-such-model" in unknown["message"]
    forbidden = out["forbidden model"]["error"]
    assert forbidden["instanceOf"] == ["PermissionDeniedError"] and forbidden["status"] == 403
    assert forbidden["code"] == "model_not_allowed"
    assert out["allowed"]["ok"] == {"content": "echo: x"}


def test_rate_limited_key_is_a_rate_limit_error_with_retry_after(gateway, model, tenant):
    key = make_key(tenant.alpha, tenant.alice, rpm_limit=1)
    calls = [
        {"label": "first", "apiKey": key.secret, "model": model},
        {"label": "second", "apiKey": key.secret, "model": model},
        {"label": "second streaming", "apiKey": key.secret, "model": model, "stream": True},
    ]
    out = {r["label"]: r for r in node_sdk(gateway, key.secret, "errors", calls=calls)}
    assert out["first"]["ok"] == {"content": "echo: x"}
    for label in ("second", "second streaming"):
        error = out[label]["error"]
        assert error["className"] == "RateLimitError" and error["instanceOf"] == ["RateLimitError"]
        assert (error["status"], error["code"], error["type"]) == (429, "rate_limit_exceeded", "rate_limit_error")
        # The gateway's OpenAI-shaped body, extra fields included, as the SDK exposes it.
        body = error["error"]
        assert (body["limit_type"], body["scope"]) == ("requests", "key")
        assert (body["llm_provider"], body["model"]) == ("openai", model)
        assert error["message"] == "429 " + body["message"]
        headers = error["headers"]
        assert 1 <= int(headers["retry-after"]) <= 61
        assert headers["x-ratelimit-limit-requests"] == "1" and headers["x-ratelimit-remaining-requests"] == "0"
        assert error["requestID"] == headers["x-request-id"] and error["requestID"].startswith("req_")


def test_upstream_faults_reach_the_sdk_as_its_typed_errors(gateway, upstream, tenant):
    names = {fault: unique_name() for fault in ("fail-429", "fail-500", "break-stream")}
    deploy(
        gateway,
        *(
            {"model_name": name, "provider": "openai", "model": fault, "api_base": upstream.url}
            for fault, name in names.items()
        ),
    )
    secret = tenant.alice_key.secret
    calls = [
        {"label": "upstream 429", "apiKey": secret, "model": names["fail-429"]},
        {"label": "upstream 500", "apiKey": secret, "model": names["fail-500"]},
        {"label": "dies mid-stream", "apiKey": secret, "model": names["break-stream"], "stream": True},
    ]
    out = {r["label"]: r for r in node_sdk(gateway, secret, "errors", calls=calls)}
    limited = out["upstream 429"]["error"]
    assert limited["instanceOf"] == ["RateLimitError"] and limited["status"] == 429
    assert limited["headers"]["retry-after"] == "7"  # the upstream's own
    assert limited["error"]["llm_provider"] == "openai" and limited["type"] == "rate_limit_error"
    failed = out["upstream 500"]["error"]
    assert failed["instanceOf"] == ["InternalServerError"] and failed["status"] == 502
    assert failed["error"]["llm_provider"] == "openai"
    # The stream began (200), so the failure arrives in the stream, which the SDK raises mid-iteration.
    broken = out["dies mid-stream"]["ok"]
    assert broken["text"] == "echo: x"
    assert broken["streamError"]["className"] == "APIError" and broken["streamError"]["error"]["message"]


def test_completions_responses_moderations_images_audio_and_rerank(gateway, model, upstream, tenant):
    out = node_sdk(gateway, tenant.alice_key.secret, "endpoints", model=model)
    assert out["completion"] == " completed"
    assert out["responseText"] == "responses ok"
    assert out["responseEvents"] == [
        "response.created",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.completed",
    ]
    assert out["responseDeltas"] == "responses ok"
    assert out["moderationFlagged"] is False and out["images"] == 2
    assert out["speech"] == {"contentType": "audio/mpeg", "text": "ID3fake-mp3-bytes"}
    assert out["transcript"] == "hello from audio"
    sent = upstream.last("/audio/transcriptions")["body"]
    assert sent["model"] == "gpt-up" and sent["file"] == {"filename": "a.wav", "size": len(b"RIFF0000WAVE")}
    assert out["rerank"] == [0, 1]


def test_files_and_batches_with_the_sdks_multipart_uploads(gateway, tenant):
    name = unique_name("mock")
    deploy(gateway, {"model_name": name, "provider": "mock", "model": "mock-up"})
    line = {
        "custom_id": "1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": name, "messages": [{"role": "user", "content": "hi"}]},
    }
    out = node_sdk(gateway, tenant.alice_key.secret, "batches", line=line)
    # What the upstream holds names the deployment's own model (the upload was checked for that one).
    stored = {**line, "body": {**line["body"], "model": "mock-up"}}
    assert out["fileId"].startswith("file-gw-") and out["batchId"].startswith("batch_gw-")
    assert out["bytes"] == len(orjson.dumps(stored)) and orjson.loads(out["content"]) == stored
    assert (out["status"], out["cancelled"]) == ("validating", "cancelled")
    assert out["bad"]["instanceOf"] == ["BadRequestError"] and out["bad"]["status"] == 400


# "text": the answer the mock upstream gives (None: the built-in mock's own); "tools": whether it streams tool calls.
TRANSLATED = {
    "anthropic": {"model": "claude-up", "api_base": "{base}", "text": "Hello from Claude", "tools": True},
    "gemini": {"model": "gemini-up", "api_base": "{base}/gemini", "text": "Hello from Gemini", "tools": False},
    "bedrock": {
        "model": "anthropic.claude-v2",
        "api_base": "{base}/bedrock",
        "region": "eu-west-1",
        "api_key": "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG",
        "text": "Hello from Bedrock",
        "tools": False,
    },
    "mock": {"model": "mock-up", "text": None, "tools": True},
}


@pytest.mark.parametrize("provider", sorted(TRANSLATED))
def test_translated_providers_read_by_every_sdk_path(gateway, upstream, tenant, provider):
    """Answers the gateway builds itself (not relayed) must satisfy the SDK's parsers and its stream helper."""
    spec = dict(TRANSLATED[provider])
    text, streams_tools = spec.pop("text"), spec.pop("tools")
    if "api_base" in spec:
        spec["api_base"] = spec["api_base"].format(base=upstream.base)
    name = unique_name(provider)
    deploy(gateway, {"model_name": name, "provider": provider, **spec})
    out = node_sdk(gateway, tenant.alice_key.secret, "translated", model=name, tools=TOOLS if streams_tools else None)
    plain, stream = out["plain"], out["stream"]
    assert plain["content"] and plain["finishReason"] == "stop"
    if text is not None:
        assert plain["content"] == text
    assert stream["text"] == out["helper"]["content"] == plain["content"]
    assert stream["objects"] == ["chat.completion.chunk"] and stream["ids"] == 1
    assert stream["finishReasons"] == ["stop"]
    assert stream["last"]["choices"] == [] and stream["last"]["usage"]["completion_tokens"] > 0
    assert out["helper"]["usage"] == stream["last"]["usage"]
    assert plain["usage"]["total_tokens"] == plain["usage"]["prompt_tokens"] + plain["usage"]["completion_tokens"]
    if streams_tools:  # streamed tool-call deltas, assembled by the SDK's helper
        assert out["tools"]["finishReason"] == "tool_calls"
        assert [c["name"] for c in out["tools"]["calls"]] == ["get_weather"] and out["tools"]["calls"][0]["hasId"]
