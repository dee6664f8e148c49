"""Rule: another organization's private model names do not exist for a key, on every /v1 route.

Acme (alice) must not learn which model names Globex (charlie) deployed for itself: on every route
that takes a model, each of Globex's private names answers alice's keys exactly like a name that never
existed (404, same body and headers apart from the request id), also for a key with a model
allow-list (which answered 403 ``model_not_allowed`` and so told the name exists), and the listing
does not show it. Charlie's own key is served on the same requests, so no 404 here is vacuous.

The routes come from the proxy's route table (``apps.proxy.app.MODEL_INPUT`` next to ``ROUTES``): a
route added there without a request here fails ``test_every_route_that_takes_a_model_is_covered``.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from apps.common.invalidation import publish_invalidation
from apps.proxy.app import MODEL_INPUT, PATH_ROUTES, ROUTES
from apps.proxy.models import ModelDeployment
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import deploy, http, make_key, unique_name
from tests.support.hostile_upstream import multipart

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

Request = tuple[str, str, bytes | None, dict[str, str]]  # method, path under /v1, body, headers
CHAT = [{"role": "user", "content": "hi"}]


def _json(path: str, **body) -> Callable[[str], Request]:
    return lambda model: ("POST", path, orjson.dumps({"model": model, **body}), {"content-type": "application/json"})


def _form(path: str, **fields) -> Callable[[str], Request]:
    def build(model: str) -> Request:
        body, content_type = multipart({"model": model, **fields})
        return "POST", path, body, {"content-type": content_type}

    return build


def _file_upload_named_by_header(model: str) -> Request:
    body, content_type = multipart({"purpose": "assistants", "file": b"some notes"})
    return "POST", "/files", body, {"content-type": content_type, "x-gateway-model": model}


def _batch_file_upload(model: str) -> Request:
    """A batch begins with its input file: the model is named only by the file's lines."""
    line = {"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": model}}
    body, content_type = multipart({"purpose": "batch", "file": orjson.dumps(line) + b"\n"})
    return "POST", "/files", body, {"content-type": content_type}


# (route op, variant) -> the request naming a model. Streaming routes are covered streamed and not.
REQUESTS: dict[tuple[str, str], Callable[[str], Request]] = {
    ("chat", ""): _json("/chat/completions", messages=CHAT),
    ("chat", "stream"): _json("/chat/completions", messages=CHAT, stream=True),
    ("completions", ""): _json("/completions", prompt="hi"),
    ("completions", "stream"): _json("/completions", prompt="hi", stream=True),
    ("embeddings", ""): _json("/embeddings", input="hi"),
    ("responses", ""): _json("/responses", input="hi"),
    ("responses", "stream"): _json("/responses", input="hi", stream=True),
    ("images", ""): _json("/images/generations", prompt="a cat"),
    ("audio_speech", ""): _json("/audio/speech", input="hi", voice="alloy"),
    ("audio_transcriptions", ""): _form("/audio/transcriptions", file=b"RIFF...."),
    ("moderations", ""): _json("/moderations", input="hi"),
    ("rerank", ""): _json("/rerank", query="q", documents=["a", "b"]),
    ("messages", ""): _json("/messages", messages=CHAT, max_tokens=5),
    ("messages", "stream"): _json("/messages", messages=CHAT, max_tokens=5, stream=True),
    ("messages_count_tokens", ""): _json("/messages/count_tokens", messages=CHAT),
    ("files_create", ""): _form("/files", purpose="assistants", file=b"some notes"),
    ("files_create", "header"): _file_upload_named_by_header,
    ("batches_create", ""): _batch_file_upload,
    ("models_get", ""): lambda model: ("GET", f"/models/{model}", None, {}),
}
VOLATILE_HEADERS = {"x-request-id", "x-gateway-overhead-ms", "date", "server"}


def test_every_route_that_takes_a_model_is_covered():
    assert set(MODEL_INPUT) == set(ROUTES.values()) | set(PATH_ROUTES.values()), "classify the new route"
    with_model = {op for op, kind in MODEL_INPUT.items() if kind not in (None, "listing")}
    assert {op for op, _variant in REQUESTS} == with_model


@pytest.fixture
def globex_private(gateway, upstream, tenant) -> list[str]:
    """Every private model name of Globex, the one on the mock upstream (it serves every route) first."""
    served = unique_name()
    deploy(
        gateway,
        {"model_name": served, "provider": "openai", "model": "gpt-up", "api_base": upstream.url,
         "organization": tenant.globex},
        {"model_name": unique_name(), "provider": "mock", "model": "mock-up", "organization": tenant.globex},
    )  # fmt: skip
    names = set(ModelDeployment.objects.filter(organization=tenant.globex).values_list("model_name", flat=True))
    return [served, *sorted(names - {served})]


@pytest.fixture
def acme_keys(gateway, upstream, tenant) -> list[str]:
    """Alice's plain key and one limited to a shared model (the 403 of issue 11 item 5)."""
    shared = unique_name()
    deploy(gateway, {"model_name": shared, "provider": "openai", "model": "gpt-up", "api_base": upstream.url})
    limited = make_key(tenant.alpha, tenant.alice, alias="alice-limited", allowed_models=[shared])
    publish_invalidation("test key")
    return [tenant.alice_key.secret, limited.secret]


def send(gateway, request: Request, key: str):
    method, path, body, headers = request
    return http(method, gateway.v1 + path, content=body, headers={"Authorization": f"Bearer {key}", **headers})


def seen(response, name: str) -> tuple[int, bytes, dict[str, str]]:
    """What a client observes, with the name it asked for (echoed in the message) made generic."""
    headers = {k: v.replace(name, "<name>") for k, v in response.headers.items() if k not in VOLATILE_HEADERS}
    return response.status_code, response.content.replace(name.encode(), b"<name>"), headers


@pytest.mark.parametrize("case", list(REQUESTS), ids=lambda case: "-".join(filter(None, case)))
def test_another_organizations_private_name_answers_like_a_name_that_never_existed(
    gateway, tenant, globex_private, acme_keys, case
):
    build = REQUESTS[case]
    for private in globex_private:
        never = unique_name(private.split("-")[0])  # same length: same content-length too
        for key in acme_keys:
            hidden, unknown = send(gateway, build(private), key), send(gateway, build(never), key)
            assert hidden.status_code == 404, (private, hidden.text)
            assert seen(hidden, private) == seen(unknown, never)
    # The owner's key finds the name on the very same request: the route really does look it up. (Served,
    # except where the mock upstream cannot answer that shape, e.g. a streamed legacy completion: a 502.)
    owner = send(gateway, build(globex_private[0]), tenant.charlie_key.secret)
    assert owner.status_code != 404 and b"model_not_found" not in owner.content, owner.text
    if case == ("batches_create", ""):
        # ... and a batch of the owner's file is the owner's alone.
        file_id = owner.json()["id"]
        batch = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        body = orjson.dumps(batch)
        for key, status in ((acme_keys[0], 404), (tenant.charlie_key.secret, 200)):
            response = send(gateway, ("POST", "/batches", body, {"content-type": "application/json"}), key)
            assert response.status_code == status, response.text


def test_the_model_listing_shows_no_other_organizations_private_names(gateway, tenant, globex_private, acme_keys):
    for key in acme_keys:
        listed = {m["id"] for m in send(gateway, ("GET", "/models", None, {}), key).json()["data"]}
        assert not listed & set(globex_private)
    owner = send(gateway, ("GET", "/models", None, {}), tenant.charlie_key.secret).json()["data"]
    assert set(globex_private) <= {m["id"] for m in owner}
