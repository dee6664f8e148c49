"""Every OpenAI-compatible /v1 endpoint through the official ``openai`` SDK, against a real gateway.

The gateway is a uvicorn subprocess on the test Postgres/Redis; the upstream is a local mock server
(tests/support/mock_upstream.py) reached over real HTTP.
"""

from __future__ import annotations

import io

import openai
import orjson
import pytest
from openai import OpenAI

from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import MASTER_KEY, deploy, deploy_priced_model, http, make_key, spend_event, unique_name

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def model(gateway, upstream, tenant):
    return deploy_priced_model(gateway, upstream)


@pytest.fixture
def client(gateway, tenant):
    return OpenAI(base_url=gateway.v1, api_key=tenant.alice_key.secret, max_retries=0)


def test_chat_completion_relays_answer_usage_and_gateway_headers(client, model, upstream, tenant):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi there"}], extra_body={"custom_flag": 7}
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "echo: hi there"
    assert completion.usage.prompt_tokens == 11 and completion.usage.completion_tokens == 7
    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["x-gateway-deployment"].endswith(":openai/gpt-up")
    # 11 prompt (2 of them cached, no cached price: input rate) x 1e-6 + 7 completion x 2e-6
    assert raw.headers["x-gateway-cost"] == "0.000025"
    assert float(raw.headers["x-gateway-overhead-ms"]) >= 0
    sent = upstream.last("/chat/completions")
    assert sent["body"]["model"] == "gpt-up"  # the deployment's upstream id, not the public name
    assert sent["body"]["custom_flag"] == 7  # unknown fields pass through
    assert sent["headers"]["Authorization"] == "Bearer sk-upstream-secret"
    assert tenant.alice_key.secret not in str(sent["headers"])


def test_upstream_cookies_are_never_replayed_to_the_upstream(client, gateway, upstream):
    """The upstream connection pool is shared by every tenant: a Set-Cookie must not stick to it."""
    name = unique_name()
    # By host name, as hosted APIs are reached (HTTP clients keep no cookies for bare IP addresses).
    by_name = upstream.url.replace("127.0.0.1", "localhost")
    deploy(gateway, {"model_name": name, "provider": "openai", "model": "gpt-up", "api_base": by_name})
    for _ in range(2):
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}])
    sent = upstream.last("/chat/completions")
    assert "Cookie" not in sent["headers"] and "cookie" not in sent["headers"]


def test_stream_with_include_usage(client, model, upstream):
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hello big world"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hello big world"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7


def test_stream_without_include_usage_gets_no_usage_chunk_but_gateway_asks_for_it(client, model, upstream):
    chunks = list(
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "quiet"}], stream=True)
    )
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    assert upstream.last("/chat/completions")["body"]["stream_options"] == {"include_usage": True}


def test_tools_and_json_mode_pass_through(client, model, upstream):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "base_url": {"type": "string"}},
                },
            },
        }
    ]
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "weather?"}], tools=tools, tool_choice="auto"
    )
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and orjson.loads(call.function.arguments) == {"city": "Paris"}
    assert completion.choices[0].finish_reason == "tool_calls"
    assert upstream.last("/chat/completions")["body"]["tools"] == tools
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "json"}], response_format={"type": "json_object"}
    )
    assert orjson.loads(completion.choices[0].message.content) == {"answer": "json"}


def test_completions_embeddings_responses_moderations(client, model, upstream):
    assert client.completions.create(model=model, prompt="say").choices[0].text == " completed"
    embedding = client.embeddings.create(model=model, input=["a", "b"])
    assert len(embedding.data) == 2 and embedding.data[0].embedding == [0.1, 0.2, 0.3]
    response = client.responses.create(model=model, input="hi")
    assert response.output_text == "responses ok"
    moderation = client.moderations.create(model=model, input="fine text")
    assert moderation.results[0].flagged is False


def test_responses_stream_relays_named_events_and_bills_the_reported_usage(client, model):
    raw = client.responses.with_raw_response.create(model=model, input="hi", stream=True)
    events = list(raw.parse())
    assert [e.type for e in events] == [
        "response.created",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.completed",
    ]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "responses ok"
    event = spend_event(raw.headers["x-request-id"])
    assert (event["prompt_tokens"], event["completion_tokens"]) == (5, 2)


def test_images_audio_and_rerank(client, model, upstream):
    images = client.images.generate(model=model, prompt="a cat", n=2)
    assert len(images.data) == 2
    speech = client.audio.speech.create(model=model, voice="alloy", input="hello")
    assert speech.content == b"ID3fake-mp3-bytes"
    transcript = client.audio.transcriptions.create(model=model, file=("a.wav", io.BytesIO(b"RIFF0000WAVE")))
    assert transcript.text == "hello from audio"
    assert upstream.last("/audio/transcriptions")["body"]["model"] == "gpt-up"
    reranked = client.post("/rerank", cast_to=object, body={"model": model, "query": "q", "documents": ["x", "y"]})
    assert [r["index"] for r in reranked["results"]] == [0, 1]


def test_models_lists_only_what_the_key_may_use(gateway, upstream, tenant):
    allowed, other = unique_name(), unique_name()
    deploy(
        gateway,
        {"model_name": allowed, "provider": "openai", "model": "gpt-up", "api_base": upstream.url},
        {"model_name": other, "provider": "openai", "model": "gpt-up", "api_base": upstream.url},
    )
    key = make_key(tenant.alpha, tenant.alice, allowed_models=[allowed])
    client = OpenAI(base_url=gateway.v1, api_key=key.secret, max_retries=0)
    names = {m.id for m in client.models.list()}
    assert allowed in names and other not in names
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model=other, messages=[{"role": "user", "content": "x"}])
    assert refused.value.body["code"] == "model_not_allowed"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])


def test_a_model_id_with_slashes_is_retrieved_by_its_whole_name(client, gateway, upstream):
    name = f"meta-llama/{unique_name('Llama')}"
    deploy(gateway, {"model_name": name, "provider": "openai", "model": "gpt-up", "api_base": upstream.url})
    assert client.models.retrieve(name).id == name
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(f"meta-llama/{unique_name('missing')}")


def test_org_private_deployment_invisible_to_other_tenants(gateway, upstream, tenant):
    private = unique_name()
    deploy(
        gateway,
        {
            "model_name": private,
            "provider": "openai",
            "model": "gpt-up",
            "api_base": upstream.url,
            "organization": tenant.acme,
        },
    )
    charlie = OpenAI(base_url=gateway.v1, api_key=tenant.charlie_key.secret, max_retries=0)
    assert private not in {m.id for m in charlie.models.list()}
    with pytest.raises(openai.NotFoundError):
        charlie.chat.completions.create(model=private, messages=[{"role": "user", "content": "x"}])
    alice = OpenAI(base_url=gateway.v1, api_key=tenant.alice_key.secret, max_retries=0)
    assert alice.chat.completions.create(model=private, messages=[{"role": "user", "content": "x"}]).choices


def test_same_401_for_unknown_wrong_and_revoked_keys(gateway, model, tenant):
    from django.utils import timezone

    revoked = make_key(tenant.alpha, tenant.alice, revoked_at=timezone.now())
    bodies = []
    for secret in ("sk-gw-unknown", tenant.alice_key.secret + "x", revoked.secret, ""):
        response = http(
            "POST",
            gateway.v1 + "/chat/completions",
            headers={"Authorization": f"Bearer {secret}"},
            json={"model": model, "messages": [{"role": "user", "content": "x"}]},
        )
        assert response.status_code == 401
        bodies.append(response.json())
    assert all(b == bodies[0] for b in bodies)
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=gateway.v1, api_key="sk-nope", max_retries=0).models.list()


def test_master_key_may_use_any_model(gateway, model):
    client = OpenAI(base_url=gateway.v1, api_key=MASTER_KEY, max_retries=0)
    assert client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}]).choices


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b'{"model": "m", "messages": [', 400, "not valid JSON"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "\xff\xfe"}]}', 400, "UTF-8"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"model": "MODEL"}', 400, "'messages' is required"),
        (b'{"model": "MODEL", "messages": []}', 400, "must not be empty"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "'model' is required"),
        (
            b'{"model": "MODEL", "messages": [{"role": "user", "content": "x"}], "api_base": "http://evil"}',
            400,
            "api_base",
        ),
        (
            b'{"model": "MODEL", "messages": [{"role": "user", "content": "x"}], "extra": {"deep": [{"base_url": 1}]}}',
            400,
            "base_url",
        ),
        (
            b'{"model": "MODEL", "messages": [{"role": "user", "content": "x"}], "metadata": {"api_key": "sk"}}',
            400,
            "api_key",
        ),
    ],
)
def test_bad_input_is_a_clear_4xx(gateway, model, tenant, body, status, fragment):
    response = http(
        "POST",
        gateway.v1 + "/chat/completions",
        content=body.replace(b"MODEL", model.encode()),
        headers={"Authorization": f"Bearer {tenant.alice_key.secret}", "content-type": "application/json"},
    )
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]
    assert response.headers["x-request-id"]


def test_oversized_body_is_413(gateway, model, tenant):
    big = {"model": model, "messages": [{"role": "user", "content": "x" * (70 * 1024)}]}
    response = http(
        "POST",
        gateway.v1 + "/chat/completions",
        json=big,
        headers={"Authorization": f"Bearer {tenant.alice_key.secret}"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_unknown_route_is_404_and_wrong_method_405(gateway, tenant):
    headers = {"Authorization": f"Bearer {tenant.alice_key.secret}"}
    assert http("POST", gateway.v1 + "/nothing-here", headers=headers, json={}).status_code == 404
    assert http("GET", gateway.v1 + "/chat/completions", headers=headers).status_code == 405


def test_files_and_batches_roundtrip_with_tenant_isolation(gateway, model, tenant, upstream):
    client = OpenAI(base_url=gateway.v1, api_key=tenant.alice_key.secret, max_retries=0)
    lines = [
        {
            "custom_id": str(i),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": "hi " * 40}], "max_tokens": 10},
        }
        for i in range(3)
    ]
    content = b"\n".join(orjson.dumps(line) for line in lines)
    uploaded = client.files.create(file=("batch.jsonl", io.BytesIO(content)), purpose="batch")
    assert uploaded.id.startswith("file-gw-") and "file-up123" not in uploaded.id
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.id.startswith("batch_gw-")
    assert upstream.last("/v1/batches")["body"]["input_file_id"] == "file-up123"
    fetched = client.batches.retrieve(batch.id)
    assert fetched.output_file_id.startswith("file-gw-")
    charlie = OpenAI(base_url=gateway.v1, api_key=tenant.charlie_key.secret, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        charlie.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve(batch.id[:-3] + "abc")  # a forged signature


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat/completions", {"messages": ["just a string"]}),
        ("/chat/completions", {"messages": [{"role": "user", "content": 5}]}),
        ("/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": 3}]}]}),
        ("/chat/completions", {"messages": [{"role": "user", "content": "x"}], "tools": "nope"}),
        (
            "/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}], "tool_choice": 9},
        ),
        ("/messages", {"messages": [{"role": "user", "content": "x"}]}),
        ("/messages", {"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": 1}]}]}),
        ("/embeddings", {"input": {"not": "a list"}}),
        ("/images/generations", {"prompt": "x", "n": "two"}),
        ("/rerank", {"query": "q", "documents": [None, 3]}),
    ],
)
@pytest.mark.parametrize("provider", ["mock", "anthropic"])
def test_malformed_shapes_never_get_a_5xx(gateway, upstream, tenant, path, body, provider):
    """Shapes the gateway cannot translate are 400s; shapes it relays are the upstream's to judge."""
    name = unique_name(provider)
    deploy(gateway, {"model_name": name, "provider": provider, "model": "up", "api_base": upstream.base})
    response = http(
        "POST",
        gateway.v1 + path,
        json={"model": name, **body},
        headers={"Authorization": f"Bearer {tenant.alice_key.secret}"},
    )
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code != 200:
        assert response.status_code == 400 and response.json()["error"]["message"]


def test_files_and_batches_on_the_builtin_mock_provider(gateway, tenant):
    name = unique_name("mock")
    deploy(gateway, {"model_name": name, "provider": "mock", "model": "mock-up"})
    client = OpenAI(base_url=gateway.v1, api_key=tenant.alice_key.secret, max_retries=0)
    line = {
        "custom_id": "1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": name, "messages": [{"role": "user", "content": "hi"}]},
    }
    uploaded = client.files.create(file=("b.jsonl", io.BytesIO(orjson.dumps(line))), purpose="batch")
    # What the upstream holds names the deployment's own model (the upload was checked for that one).
    stored = orjson.dumps({**line, "body": {**line["body"], "model": "mock-up"}})
    assert client.files.retrieve(uploaded.id).bytes == len(stored)
    assert client.files.content(uploaded.id).content == stored
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert client.batches.retrieve(batch.id).status == "validating"
    assert client.batches.cancel(batch.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("bad.jsonl", io.BytesIO(b"not json")), purpose="batch")


def test_openapi_description_of_the_v1_surface(gateway):
    response = http("GET", gateway.v1 + "/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/v1/chat/completions", "/v1/messages", "/v1/embeddings", "/v1/models"} <= set(paths)
    assert "429" in paths["/v1/chat/completions"]["post"]["responses"]
