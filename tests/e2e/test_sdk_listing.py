"""Listing and deleting files and batches, and counting tokens, through the official SDKs.

A key lists and deletes only what its own organization created through the gateway (an upstream
account is shared by tenants, so the upstream's own list is never relayed).
"""

from __future__ import annotations

import io

import anthropic
import openai
import orjson
import pytest
from openai import OpenAI

from apps.proxy.models import GatewayObject
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import MASTER_KEY, deploy, http, make_key, spend_event, unique_name

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _batch_line(model: str, text: str = "hi") -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 5}
    return orjson.dumps({"custom_id": "1", "method": "POST", "url": "/v1/chat/completions", "body": body})


@pytest.fixture
def mock_name(gateway) -> str:
    name = unique_name("mock")
    deploy(gateway, {"model_name": name, "provider": "mock", "model": "mock-up"})
    return name


def _clients(gateway, tenant) -> tuple[OpenAI, OpenAI]:
    alice = OpenAI(base_url=gateway.v1, api_key=tenant.alice_key.secret, max_retries=0)
    charlie = OpenAI(base_url=gateway.v1, api_key=tenant.charlie_key.secret, max_retries=0)
    return alice, charlie


def test_files_list_shows_only_the_organizations_own_files(gateway, tenant, mock_name):
    alice, charlie = _clients(gateway, tenant)
    mine = [
        alice.files.create(file=(f"a{i}.jsonl", io.BytesIO(_batch_line(mock_name, f"a{i}"))), purpose="batch")
        for i in range(3)
    ]
    theirs = charlie.files.create(file=("c.jsonl", io.BytesIO(_batch_line(mock_name, "c"))), purpose="batch")

    listed = [f.id for f in alice.files.list()]
    assert sorted(listed) == sorted(f.id for f in mine)
    assert listed == [f.id for f in reversed(mine)]  # newest first, like OpenAI
    assert all(f.object == "file" and f.purpose == "batch" and f.bytes > 0 for f in alice.files.list())
    assert [f.id for f in charlie.files.list()] == [theirs.id]
    assert alice.files.list(purpose="assistants").data == []

    # Pages of one, followed by the SDK through `after`, visit every file once.
    page = alice.files.list(limit=1)
    assert len(page.data) == 1 and page.has_more
    assert sorted(f.id for f in page) == sorted(f.id for f in mine)
    # Another tenant's id as a cursor is as unknown as a forged one.
    response = http(
        "GET", gateway.v1 + f"/files?after={theirs.id}", headers={"Authorization": f"Bearer {tenant.alice_key.secret}"}
    )
    assert response.status_code == 404, response.text
    assert {f.id for f in OpenAI(base_url=gateway.v1, api_key=MASTER_KEY).files.list(limit=100)} >= {
        *(f.id for f in mine),
        theirs.id,
    }


def test_files_delete_is_scoped_to_the_organization(gateway, tenant, mock_name):
    alice, charlie = _clients(gateway, tenant)
    uploaded = alice.files.create(file=("d.jsonl", io.BytesIO(_batch_line(mock_name))), purpose="batch")
    with pytest.raises(openai.NotFoundError):
        charlie.files.delete(uploaded.id)
    assert alice.files.retrieve(uploaded.id).id == uploaded.id  # still there

    deleted = alice.files.delete(uploaded.id)
    assert deleted.deleted is True and deleted.id == uploaded.id
    assert uploaded.id not in [f.id for f in alice.files.list()]
    assert not GatewayObject.objects.filter(public_id=uploaded.id).exists()
    with pytest.raises(openai.NotFoundError):
        alice.files.retrieve(uploaded.id)  # the upstream forgot it too


def test_files_delete_goes_to_an_openai_upstream(gateway, tenant, upstream):
    name = unique_name("gpt")
    deploy(gateway, {"model_name": name, "provider": "openai", "model": "gpt-up", "api_base": upstream.url})
    alice, _ = _clients(gateway, tenant)
    uploaded = alice.files.create(file=("u.jsonl", io.BytesIO(_batch_line(name))), purpose="batch")
    assert alice.files.delete(uploaded.id).deleted is True
    last = upstream.last("/v1/files/")
    assert last["path"] == "/v1/files/file-up123"
    assert uploaded.id not in [f.id for f in alice.files.list()]


def test_batches_list_shows_only_the_organizations_own_batches_with_current_status(gateway, tenant, mock_name):
    alice, charlie = _clients(gateway, tenant)

    def submit(client: OpenAI, text: str):
        uploaded = client.files.create(file=("b.jsonl", io.BytesIO(_batch_line(mock_name, text))), purpose="batch")
        return client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )

    first, second = submit(alice, "one"), submit(alice, "two")
    theirs = submit(charlie, "three")
    alice.batches.cancel(first.id)

    listed = {b.id: b for b in alice.batches.list()}
    assert set(listed) == {first.id, second.id}
    assert listed[first.id].status == "cancelled"  # re-read from the upstream, not the recorded snapshot
    assert listed[second.id].input_file_id.startswith("file-gw-")
    assert [b.id for b in charlie.batches.list()] == [theirs.id]
    with pytest.raises(openai.BadRequestError):
        alice.batches.list(limit=1000)


def test_count_tokens_estimates_for_non_anthropic_deployments(gateway, tenant, mock_name):
    client = anthropic.Anthropic(base_url=gateway.url, api_key=tenant.alice_key.secret, max_retries=0)
    short = client.messages.count_tokens(model=mock_name, messages=[{"role": "user", "content": "hi"}])
    long = client.messages.count_tokens(
        model=mock_name,
        system="You are terse.",
        messages=[{"role": "user", "content": "tell me about the weather in Paris " * 50}],
    )
    assert 0 < short.input_tokens < long.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=[{"role": "user", "content": "hi"}])


def test_count_tokens_relays_to_an_anthropic_upstream(gateway, tenant, upstream):
    name = unique_name("claude")
    deploy(
        gateway,
        {
            "model_name": name,
            "provider": "anthropic",
            "model": "claude-up",
            "api_base": upstream.base,
            "api_key": "sk-ant-upstream",
        },
    )
    client = anthropic.Anthropic(base_url=gateway.url, api_key=tenant.alice_key.secret, max_retries=0)
    counted = client.messages.count_tokens(model=name, messages=[{"role": "user", "content": "hi"}])
    assert counted.input_tokens == 1001  # the mock upstream's own count
    last = upstream.last("/v1/messages/count_tokens")
    assert last["body"]["model"] == "claude-up" and last["headers"]["x-api-key"] == "sk-ant-upstream"


def test_counting_on_an_anthropic_upstream_passes_the_keys_rate_limit(gateway, tenant, upstream):
    """Each relayed count spends the shared upstream's quota: it is a request to the key's limiters."""
    name = unique_name("claude")
    deploy(gateway, {"model_name": name, "provider": "anthropic", "model": "claude-up", "api_base": upstream.base})
    key = make_key(tenant.alpha, tenant.alice, rpm_limit=2)
    client = anthropic.Anthropic(base_url=gateway.url, api_key=key.secret, max_retries=0)
    for _ in range(2):
        assert client.messages.count_tokens(model=name, messages=[{"role": "user", "content": "hi"}]).input_tokens
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.count_tokens(model=name, messages=[{"role": "user", "content": "hi"}])
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert refused.value.body["error"]["llm_provider"] == "anthropic"
    counted = spend_event(refused.value.response.headers["x-request-id"])
    assert counted["status"] == 429 and counted["route"] == "/v1/messages/count_tokens"


def test_count_tokens_respects_the_keys_allowed_models(gateway, tenant, mock_name):
    from tests.support.gateway import make_key

    narrow = make_key(tenant.alpha, tenant.alice, allowed_models=["something-else"])
    client = anthropic.Anthropic(base_url=gateway.url, api_key=narrow.secret, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.count_tokens(model=mock_name, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code in (401, 403)
