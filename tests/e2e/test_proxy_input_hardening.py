"""Hostile client input on the /v1 surface, against a real gateway: ids, bodies, uploads, framing, batches.

Whatever a client sends ends as a clean 4xx (or the upstream's tagged answer), never a gateway
error, a hang, a bypassed check or a worker exhausted.
"""

from __future__ import annotations

from urllib.parse import unquote

import orjson
import pytest

from apps.common.invalidation import publish_invalidation
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import deploy, http, spend_event, unique_name
from tests.support.hostile_upstream import *  # noqa: F403
from tests.support.hostile_upstream import (
    auth_headers,
    chat,
    deploy_at,
    multipart,
    raw_exchange,
    status_of,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize(
    "path", ["/v1/files/file-gw-AAAA.%C3%A9", "/v1/batches/batch_gw-AAAA.%E2%80%A8", "/v1/files/file-gw-%C3%A9.abc"]
)
def test_non_ascii_file_and_batch_ids_are_404(gateway, tenant, path):
    response = http("GET", gateway.url + path, headers=auth_headers(tenant))
    assert response.status_code == 404, response.text


def test_non_ascii_input_file_id_of_a_batch_is_404(gateway, tenant):
    body = {"input_file_id": "file-gw-AAAA.\u00e9", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    response = http("POST", gateway.v1 + "/batches", json=body, headers=auth_headers(tenant))
    assert response.status_code == 404, response.text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/files/..%2F..%2Fadmin",
        "/v1/files/file-gw-x%3Fa=b",
        "/v1/batches/..",
        "/v1/files/%2e%2e/content",
    ],
)
def test_traversal_shaped_ids_are_404(gateway, tenant, path):
    response = http("GET", gateway.url + path, headers=auth_headers(tenant))
    assert response.status_code in (404, 405), response.text  # (405: GET on the collection's own path)
    assert response.json()["error"]


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "assistant", "tool_calls": 5}],
        [{"role": "assistant", "tool_calls": True}],
        [{"role": "user", "content": [5, None, {"type": "image_url"}]}],
    ],
)
def test_ill_typed_message_fields_are_a_400_not_a_5xx(gateway, tenant, mock_model, messages):
    body = {"model": mock_model, "messages": [*messages, {"role": "user", "content": "x"}]}
    response = http("POST", gateway.v1 + "/chat/completions", json=body, headers=auth_headers(tenant))
    assert response.status_code in (200, 400), response.text


@pytest.mark.parametrize("path", ["/embeddings", "/completions", "/moderations"])
def test_a_non_list_messages_field_on_other_routes_is_not_a_5xx(gateway, tenant, mock_model, path):
    body = {"model": mock_model, "input": "x", "prompt": "x", "messages": 5}
    response = http("POST", gateway.v1 + path, json=body, headers=auth_headers(tenant))
    assert response.status_code in (200, 400), response.text


@pytest.mark.parametrize("depth", [80, 300])
def test_a_forbidden_field_nested_deeper_than_the_walk_is_still_refused(gateway, tenant, mock_model, depth):
    raw = b'{"model": "%s", "messages": [{"role": "user", "content": "x"}], "extra": ' % mock_model.encode()
    raw += b"[" * depth + b'{"api_base": "http://evil.example"}' + b"]" * depth + b"}"
    headers = {**auth_headers(tenant), "content-type": "application/json"}
    response = http("POST", gateway.v1 + "/chat/completions", content=raw, headers=headers)
    assert response.status_code == 400, response.text


def test_very_deep_json_is_a_400(gateway, tenant, mock_model):
    raw = b'{"model": "%s", "messages": [{"role": "user", "content": "x"}], "x": ' % mock_model.encode()
    raw += b"[" * 5000 + b"]" * 5000 + b"}"
    response = http(
        "POST",
        gateway.v1 + "/chat/completions",
        content=raw,
        headers={**auth_headers(tenant), "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("value", ["true", 1, {"on": True}])
def test_stream_must_be_a_boolean(gateway, tenant, mock_model, value):
    response = chat(gateway, tenant, mock_model, stream=value)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "stream"


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/audio/transcriptions", {"api_base": "http://evil.example", "file": b"RIFF"}),
        ("/files", {"purpose": "assistants", "api_key": "sk-mine", "file": b"{}"}),
        (
            "/files",
            {"purpose": "batch", "file": b'{"custom_id": "1", "body": {"messages": [], "base_url": "http://evil"}}'},
        ),
    ],
)
def test_forbidden_fields_in_a_multipart_upload_are_refused(gateway, tenant, mock_model, path, fields):
    body, content_type = multipart({"model": mock_model, **fields})
    headers = {**auth_headers(tenant), "content-type": content_type}
    response = http("POST", gateway.v1 + path, content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert "cannot be set by clients" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/audio/transcriptions", "/v1/files"])
def test_chunked_uploads_over_the_limit_are_413(gateway, tenant, mock_model, path):
    """No content-length to trust: the gateway counts the chunks (PROXY_MAX_BODY_BYTES is 64 KiB here)."""
    if path == "/v1/chat/completions":
        payload, content_type = (
            orjson.dumps({"model": mock_model, "messages": [{"role": "user", "content": "x" * 90_000}]}),
            "application/json",
        )
    else:
        payload, content_type = multipart({"model": mock_model, "purpose": "assistants", "file": b"\0" * 90_000})
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(payload[i : i + 8192]), payload[i : i + 8192]) for i in range(0, len(payload), 8192)
    )
    request = (
        (
            f"POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tenant.alice_key.secret}\r\n"
            f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        ).encode()
        + chunks
        + b"0\r\n\r\n"
    )
    answer = raw_exchange(gateway, request)
    assert status_of(answer) == 413, answer[:300]


@pytest.mark.parametrize(
    "framing",
    [
        "Content-Length: {n}\r\nContent-Length: 5",
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: xchunked\r\nContent-Length: {n}",
        "Content-Length: {n}\r\n X-Folded: continuation",
    ],
)
def test_ambiguous_request_framing_is_refused(gateway, tenant, mock_model, framing):
    """What a front proxy and the gateway could frame differently (smuggling) never reaches the app."""
    payload = orjson.dumps({"model": mock_model, "messages": [{"role": "user", "content": "x"}]})
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tenant.alice_key.secret}\r\n"
        f"Content-Type: application/json\r\n{framing.format(n=len(payload))}\r\nConnection: close\r\n\r\n"
    ).encode() + payload
    answer = raw_exchange(gateway, request)
    assert status_of(answer) == 400, answer[:300]


@pytest.mark.parametrize(
    "headers",
    [
        lambda key: {"Authorization": f"bearer {key}"},
        lambda key: {"Authorization": f"BEARER   {key}  "},
        lambda key: {"x-api-key": key},
        lambda key: {"api-key": key},
    ],
)
def test_key_header_spellings_clients_use(gateway, tenant, mock_model, headers):
    body = {"model": mock_model, "messages": [{"role": "user", "content": "x"}]}
    response = http("POST", gateway.v1 + "/chat/completions", json=body, headers=headers(tenant.alice_key.secret))
    assert response.status_code == 200, response.text


# --- batch files: the upstream runs the deployment the upload was checked (and charged) for -----------------
def test_a_batch_file_cannot_run_a_model_the_key_may_not_use(gateway, tenant, hostile):
    allowed = deploy_at(gateway, "openai", f"{hostile.base}/keeps-files/v1", model="up-cheap")
    forbidden = deploy_at(gateway, "openai", f"{hostile.base}/keeps-files/v1", model="up-expensive")
    tenant.alice_key.allowed_models = [allowed]
    tenant.alice_key.save()
    publish_invalidation("test key")
    for line_model in (forbidden, "up-expensive", allowed):
        line = {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": line_model}}
        body, content_type = multipart({"model": allowed, "purpose": "batch", "file": orjson.dumps(line)})
        hostile.files.clear()
        response = http(
            "POST", gateway.v1 + "/files", content=body, headers={**auth_headers(tenant), "content-type": content_type}
        )
        if line_model != allowed:
            assert response.status_code == 400, response.text
            assert hostile.files == []
            continue
        assert response.status_code == 200, response.text
        # The upstream runs the deployment the upload was checked and charged for, by its own model id.
        assert orjson.loads(hostile.files[-1]["content"])["body"]["model"] == "up-cheap"


def test_a_batch_is_charged_for_what_its_input_file_holds(gateway, tenant, mock_model):
    """Only files uploaded as batch input are counted; a form whose parsers could disagree is refused."""
    line = {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": mock_model}}
    content = b"\n".join([orjson.dumps(line)] * 50)
    body, content_type = multipart({"model": mock_model, "purpose": "assistants", "file": content})
    headers = {**auth_headers(tenant), "content-type": content_type}
    uploaded = http("POST", gateway.v1 + "/files", content=body, headers=headers)
    assert uploaded.status_code == 200, uploaded.text
    batch = {"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    response = http("POST", gateway.v1 + "/batches", json=batch, headers=auth_headers(tenant))
    assert response.status_code == 400, response.text

    # Two "purpose" parts: the gateway reads one, an upstream may read the other.
    twice = b'--b0undary\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
    twice += multipart({"model": mock_model, "purpose": "assistants", "file": content})[0]
    response = http("POST", gateway.v1 + "/files", content=twice, headers=headers)
    assert response.status_code == 400, response.text
    assert "more than once" in response.json()["error"]["message"]


def test_absurdly_long_model_and_user_never_reach_the_ledger_whole(gateway, tenant, mock_model):
    long_model = "m" * 50_000 + "\r\nx-injected: 1"
    response = chat(gateway, tenant, long_model)
    assert response.status_code == 404 and len(response.content) < 1000, response.text[:200]
    assert "x-injected" not in response.headers
    assert len(spend_event(response.headers["x-request-id"])["model"]) <= 200

    response = chat(gateway, tenant, mock_model, user="u" * 50_000)
    assert response.status_code == 200, response.text[:200]
    assert len(spend_event(response.headers["x-request-id"])["customer_id"]) <= 255


@pytest.mark.parametrize(("path", "field"), [("/images/generations", "n"), ("/embeddings", "dimensions")])
@pytest.mark.parametrize("value", [10**18, 10**8, -5])
def test_the_builtin_mock_refuses_sizes_that_would_exhaust_the_worker(gateway, tenant, mock_model, path, field, value):
    body = {"model": mock_model, "prompt": "a cat", "input": "x", field: value}
    response = http("POST", gateway.v1 + path, json=body, headers=auth_headers(tenant), timeout=10)
    assert response.status_code == 400, response.text[:200]
    assert response.json()["error"]["param"] == field


# --- every route x odd field values x every provider: a clean 4xx/5xx, never a gateway error or a hang ------
ODD_VALUES = [None, True, -1, 1.5, 10**18, "", "x", [], [None], [1], [{}], {}, {"type": "text"}, [{"role": "user"}]]
ODD_FIELDS = {
    "/chat/completions": ("messages", "tools", "tool_choice", "response_format", "stop", "n", "max_tokens", "user"),
    "/completions": ("prompt", "max_tokens", "n"),
    "/embeddings": ("input", "encoding_format", "dimensions"),
    "/responses": ("input", "instructions", "tools"),
    "/images/generations": ("prompt", "n"),
    "/audio/speech": ("input",),
    "/moderations": ("input",),
    "/rerank": ("query", "documents", "top_n"),
    "/messages": ("messages", "max_tokens", "system", "tools", "tool_choice", "metadata"),
    "/batches": ("input_file_id", "metadata"),
}
VALID = {
    "/chat/completions": {"messages": [{"role": "user", "content": "x"}]},
    "/completions": {"prompt": "x"},
    "/embeddings": {"input": "x"},
    "/responses": {"input": "x"},
    "/images/generations": {"prompt": "x"},
    "/audio/speech": {"input": "x", "voice": "alloy"},
    "/moderations": {"input": "x"},
    "/rerank": {"query": "q", "documents": ["a"]},
    "/messages": {"messages": [{"role": "user", "content": "x"}], "max_tokens": 5},
    "/batches": {"input_file_id": "file-gw-x.y"},
}


@pytest.mark.parametrize("provider", ["mock", "openai", "anthropic", "gemini", "bedrock"])
def test_no_request_shape_gets_a_gateway_error_or_hangs(gateway, tenant, upstream, provider):
    base = {"openai": upstream.url, "anthropic": upstream.base, "gemini": upstream.base + "/gemini"}
    base["bedrock"] = upstream.base + "/bedrock"
    name = unique_name(provider)
    # (The mock upstream answers odd shapes with 500s: no cooldown, every request must reach the gateway's code.)
    spec = {"model_name": name, "provider": provider, "model": "up", "extra": {"cooldown_failures": 10**6}}
    deploy(gateway, {**spec, "api_base": base.get(provider, ""), "api_key": "AK:SK" if provider == "bedrock" else "k"})
    odd = []
    for path, fields in ODD_FIELDS.items():
        for field in fields:
            for value in ODD_VALUES:
                for stream in (False, True) if path in ("/chat/completions", "/messages") else (False,):
                    body = {"model": name, **VALID[path], field: value, **({"stream": True} if stream else {})}
                    response = http("POST", gateway.v1 + path, json=body, headers=auth_headers(tenant), timeout=10)
                    status, text = response.status_code, response.content
                    if b"gateway_error" in text or (status >= 500 and b"llm_provider" not in text):
                        odd.append((path, field, value, stream, status, text[:200]))
    assert not odd, odd[:10]


def test_an_upload_keeps_its_file_name_whole(gateway, tenant, upstream):
    """The upstream tells the audio format by the file name's extension; a ";" in it must not cut it."""
    name = deploy_at(gateway, "openai", upstream.url, model="gpt-up")
    body = (
        b'--b0undary\r\nContent-Disposition: form-data; name="model"\r\n\r\n' + name.encode() + b"\r\n"
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="take 1; final.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF0000WAVE\r\n--b0undary--\r\n"
    )
    headers = {**auth_headers(tenant), "content-type": "multipart/form-data; boundary=b0undary"}
    response = http("POST", gateway.v1 + "/audio/transcriptions", content=body, headers=headers)
    assert response.status_code == 200, response.text
    sent = upstream.last("/audio/transcriptions")["body"]["file"]["filename"]
    assert unquote(sent) == "take 1; final.wav"  # (aiohttp's form encoder percent-escapes file names)


def test_a_deployment_row_with_a_line_break_in_its_model_is_skipped_not_served(gateway, tenant):
    """A row written before the services refused control characters: uvicorn would refuse the
    x-gateway-deployment header and close every answer; the registry leaves it out instead."""
    name = unique_name("crlf")
    deploy(gateway, {"model_name": name, "provider": "mock", "model": "mock-up\r\nx-injected: 1"}, wait=False)
    clean = unique_name("mock")
    deploy(gateway, {"model_name": clean, "provider": "mock", "model": "mock-up"})  # the reload saw both rows
    assert name not in gateway.models()
    response = chat(gateway, tenant, name)
    assert 400 <= response.status_code < 500, response.text
    assert "x-injected" not in response.headers
    assert chat(gateway, tenant, clean).status_code == 200
