"""What the /v1 proxy does with what upstreams send back, against a real gateway and a hostile upstream.

Redirects, error texts that leak the deployment, odd labels and shapes, oversized answers, broken or
strange streams, response headers: each ends as a clean, provider-tagged answer for the client, and
nothing of the deployment (key, host, account) or of other tenants reaches it.
"""

from __future__ import annotations

import orjson
import pytest

from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import GatewayServer, http, spend_event
from tests.support.hostile_upstream import *  # noqa: F403
from tests.support.hostile_upstream import (
    UPSTREAM_KEY,
    assert_nothing_private,
    auth_headers,
    chat,
    deploy_at,
    messages,
    multipart,
    sse_data,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


# --- redirects: the upstream pool must never follow them -----------------------------------------------
@pytest.mark.parametrize("code", [302, 307])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_upstream_redirects_are_not_followed(gateway, tenant, hostile, code, provider):
    """A redirect would reach hosts no deployment names (metadata, internal services) with the credentials."""
    name = deploy_at(gateway, provider, f"{hostile.base}/redirect{code}" + ("/v1" if provider == "openai" else ""))
    hostile.loot.clear()
    response = chat(gateway, tenant, name)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["llm_provider"] == provider
    assert "AKIASECRET" not in response.text
    assert hostile.loot == []


def test_the_admins_connection_test_says_where_a_redirect_went(hostile, transactional_db):
    from apps.monitoring.connection_probe import probe_deployment
    from apps.proxy.models import ModelDeployment

    deployment = ModelDeployment(
        model_name="probe-redirect", provider="openai", model="up", api_base=f"{hostile.base}/redirect302/v1"
    )
    deployment.set_credentials(UPSTREAM_KEY)
    deployment.save()
    hostile.loot.clear()
    result = probe_deployment(deployment)
    assert not result.ok and f"HTTP 302 to {hostile.base}/loot" in result.detail, result
    assert hostile.loot == []


def _resolve_as(monkeypatch, names: dict[str, str]) -> None:
    """Point host names at chosen addresses for this process (DNS rebinding, without touching /etc/hosts)."""
    import socket

    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        return real(names.get(host, host), *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_the_admins_connection_test_refuses_a_host_that_resolves_to_metadata(monkeypatch, transactional_db):
    """api_base names a host, so it passed validation; at connect time it resolves to 169.254.169.254."""
    from apps.monitoring.connection_probe import probe_deployment
    from apps.proxy.models import ModelDeployment
    from apps.proxy.providers.base import ADDRESS_REFUSED_DETAIL

    _resolve_as(monkeypatch, {"rebound.example.test": "169.254.169.254"})
    deployment = ModelDeployment(
        model_name="probe-rebind", provider="openai", model="up", api_base="http://rebound.example.test/v1"
    )
    deployment.timeout_seconds = 2
    deployment.set_credentials(UPSTREAM_KEY)
    deployment.save()
    result = probe_deployment(deployment)
    # The proxy's own pool answers such a deployment with a 502 "Could not reach the upstream".
    assert not result.ok and result.status == 502 and result.detail == ADDRESS_REFUSED_DETAIL, result


def test_the_admins_connection_test_refuses_private_addresses_when_they_are_off(
    monkeypatch, settings, upstream, transactional_db
):
    from apps.monitoring.connection_probe import probe_deployment
    from apps.proxy.models import ModelDeployment

    settings.PROXY_ALLOW_PRIVATE_UPSTREAMS = False
    _resolve_as(monkeypatch, {"internal.example.test": "127.0.0.1"})
    deployment = ModelDeployment(
        model_name="probe-private",
        provider="openai",
        model="probe-private-up",
        api_base=f"http://internal.example.test:{upstream.port}/v1",
    )
    deployment.set_credentials(UPSTREAM_KEY)
    deployment.save()
    seen = len(upstream.requests)
    result = probe_deployment(deployment)
    assert not result.ok and result.status == 502, result
    assert not any("probe-private-up" in str(r["body"]) for r in upstream.requests[seen:])


# --- upstream error texts: relayed, but never the deployment's key, host or account ------------------------


def test_upstream_error_texts_never_carry_credentials_hosts_or_accounts(gateway, tenant, hostile):
    name = deploy_at(gateway, "openai", f"{hostile.base}/leaky/v1")
    response = chat(gateway, tenant, name)
    assert response.status_code == 400, response.text
    assert "rejected key" in response.json()["error"]["message"]  # the upstream's text is still relayed
    assert_nothing_private(response.text, hostile)

    rate = deploy_at(gateway, "openai", f"{hostile.base}/leaky/v1", model="rate")
    response = chat(gateway, tenant, rate)
    assert response.status_code == 429, response.text
    assert "Rate limit reached for gpt-4o" in response.json()["error"]["message"]
    assert_nothing_private(response.text, hostile)


def test_error_events_inside_a_stream_are_scrubbed(gateway, tenant, hostile):
    name = deploy_at(gateway, "openai", f"{hostile.base}/leaky/v1", model="stream-error")
    response = chat(gateway, tenant, name, stream=True)
    assert response.status_code == 200
    assert b'"llm_provider":"openai"' in response.content and b"failed for key" in response.content
    assert_nothing_private(response.text, hostile)

    claude = deploy_at(gateway, "anthropic", f"{hostile.base}/leaky")
    response = messages(gateway, tenant, claude, stream=True)
    assert response.status_code == 200 and b"event: error" in response.content
    assert_nothing_private(response.text, hostile)


def test_responses_api_failure_events_are_scrubbed(gateway, tenant, hostile):
    name = deploy_at(gateway, "openai", f"{hostile.base}/leaky/v1")
    response = http(
        "POST",
        gateway.v1 + "/responses",
        json={"model": name, "input": "hi", "stream": True},
        headers=auth_headers(tenant),
    )
    assert response.status_code == 200
    assert response.content.count(b"key ***") == 2, response.content
    assert_nothing_private(response.text, hostile)


def test_gemini_rejecting_the_deployment_key_is_not_the_clients_400(gateway, tenant, hostile):
    """Gemini says 400 "API key not valid" for a bad key: the client's key was fine, the deployment's is not."""
    name = deploy_at(gateway, "gemini", f"{hostile.base}/leaky/gemini", model="gemini-up")
    response = chat(gateway, tenant, name)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["llm_provider"] == "gemini" and "API key not valid" not in error["message"]


def test_gzipped_upstream_answer_is_relayed_decoded_with_a_matching_length(gateway, tenant, hostile):
    name = deploy_at(gateway, "openai", f"{hostile.base}/gzip/v1")
    response = chat(gateway, tenant, name)
    assert response.status_code == 200, response.text
    assert "content-encoding" not in response.headers
    assert int(response.headers["content-length"]) == len(response.content)
    # None of the upstream's own headers reach the client: ids, account, limits, cookies, its servers.
    assert response.headers["x-request-id"].startswith("req_") and response.headers["x-request-id"] != "req_upstream_1"
    leaked = {"openai-organization", "openai-project", "x-ratelimit-remaining-requests", "set-cookie", "via"}
    assert not leaked & set(response.headers) and "internal" not in str(response.headers)
    assert response.json()["choices"][0]["message"]["content"] == "z" * 5000


# --- private upstreams off: names are checked when connecting, not only literal addresses -----------------
@pytest.fixture(scope="module")
def public_only_gateway(django_db_setup, django_db_blocker, upstream):
    with django_db_blocker.unblock(), GatewayServer(PROXY_ALLOW_PRIVATE_UPSTREAMS="false") as server:
        yield server


def test_a_host_name_resolving_to_a_private_address_is_refused_when_private_upstreams_are_off(
    public_only_gateway, tenant, upstream
):
    """``localhost`` passes the write-time check (names are not resolved then); connecting must refuse it."""
    name = deploy_at(public_only_gateway, "openai", upstream.url.replace("127.0.0.1", "localhost"))
    seen = len(upstream.requests)
    response = chat(public_only_gateway, tenant, name)
    assert response.status_code == 502, response.text
    assert len(upstream.requests) == seen


# --- a stream the gateway cannot read ends with an error event, never a silent cut -------------------------
def test_an_unreadable_stream_chunk_ends_the_stream_with_an_error_event(gateway, tenant, hostile):
    name = deploy_at(gateway, "openai", f"{hostile.base}/odd-stream/v1")
    response = chat(gateway, tenant, name, stream=True)
    assert response.status_code == 200 and b"partial" in response.content
    last = response.content.strip().split(b"\n\n")[-1]
    assert last.startswith(b"data: {") and b'"error"' in last, response.content

    response = messages(gateway, tenant, name, stream=True)
    assert response.status_code == 200
    assert response.content.strip().split(b"\n\n")[-1].startswith(b"event: error"), response.content


# --- answers are judged by what they are, not by their content-type label ----------------------------------
def test_an_html_page_instead_of_json_is_a_502(gateway, tenant, hostile):
    name = deploy_at(gateway, "openai", f"{hostile.base}/labels/v1", model="html")
    response = chat(gateway, tenant, name)
    assert response.status_code == 502, response.text
    assert response.headers["content-type"] == "application/json" and "log in" not in response.text


def test_json_labelled_text_plain_is_read_as_json_and_billed_by_its_usage(gateway, tenant, hostile):
    name = deploy_at(
        gateway,
        "openai",
        f"{hostile.base}/labels/v1",
        input_cost_per_token="0.000001",
        output_cost_per_token="0.000001",
    )
    response = chat(gateway, tenant, name)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-gateway-cost"] == "0.002"  # 2,000 reported tokens, not an estimate


def test_events_of_a_route_the_gateway_does_not_stream_are_relayed_as_is_and_billed(gateway, tenant, hostile):
    name = deploy_at(gateway, "openai", f"{hostile.base}/labels/v1", extra={"cost_per_image": "0.04"})
    body = {"model": name, "prompt": "a cat", "stream": True, "partial_images": 1}
    response = http("POST", gateway.v1 + "/images/generations", json=body, headers=auth_headers(tenant))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert b"image_generation.completed" in response.content
    assert response.headers["x-gateway-cost"] == "0.04"  # one image, as for the same answer without events


def test_jsonl_file_content_is_relayed_as_is(gateway, tenant, hostile):
    name = deploy_at(gateway, "openai", f"{hostile.base}/labels/v1")
    body, content_type = multipart({"model": name, "purpose": "assistants", "file": b"{}"})
    created = http(
        "POST", gateway.v1 + "/files", content=body, headers={**auth_headers(tenant), "content-type": content_type}
    )
    assert created.status_code == 200, created.text
    content = http("GET", f"{gateway.v1}/files/{created.json()['id']}/content", headers=auth_headers(tenant))
    assert content.status_code == 200, content.text
    assert content.content.count(b"custom_id") == 2


# --- upstream answers are bounded (PROXY_MAX_RESPONSE_BYTES): one tenant's upstream cannot exhaust memory ---
@pytest.fixture(scope="module")
def bounded_gateway(django_db_setup, django_db_blocker, upstream):
    with django_db_blocker.unblock(), GatewayServer(PROXY_MAX_RESPONSE_BYTES="100000") as server:
        yield server


@pytest.mark.parametrize(
    ("model", "stream"), [("declared", False), ("gzip-bomb", False), ("chunked", False), ("endless-event", True)]
)
def test_an_upstream_answer_over_the_limit_is_a_502(bounded_gateway, tenant, hostile, model, stream):
    name = deploy_at(bounded_gateway, "openai", f"{hostile.base}/big/v1", model=model)
    response = chat(bounded_gateway, tenant, name, stream=stream)
    if stream:
        assert response.status_code == 200 and b'"error"' in response.content, response.content[-300:]
        assert b"larger than the gateway relays" in response.content
    else:
        assert response.status_code == 502, response.text[:300]
        assert response.json()["error"]["message"] == "The upstream answer is larger than the gateway relays."


def test_a_garbled_bedrock_event_stream_ends_with_an_error_event(gateway, tenant, hostile):
    name = deploy_at(
        gateway, "bedrock", f"{hostile.base}/garbled/bedrock", model="anthropic.claude-x", api_key="AKIA:SECRET"
    )
    response = chat(gateway, tenant, name, stream=True)
    assert response.status_code == 200
    last = response.content.strip().split(b"\n\n")[-1]
    assert last.startswith(b"data: {") and b'"llm_provider":"bedrock"' in last, response.content


@pytest.mark.parametrize("value", ["inf", "nan", "1e300", "-5"])
def test_an_absurd_upstream_retry_after_is_still_a_clean_429(gateway, tenant, hostile, value):
    name = deploy_at(gateway, "openai", f"{hostile.base}/leaky/v1", model=f"retry-after={value}")
    response = chat(gateway, tenant, name)
    assert response.status_code == 429, response.text
    assert response.json()["error"]["llm_provider"] == "openai"
    assert 1 <= int(response.headers["retry-after"]) <= 3600


def test_an_odd_shaped_answer_is_the_upstreams_fault_not_a_gateway_error(gateway, tenant, hostile):
    name = deploy_at(gateway, "openai", f"{hostile.base}/odd/v1")
    response = messages(gateway, tenant, name)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["llm_provider"] == "openai"

    body, content_type = multipart({"model": name, "purpose": "assistants", "file": b"{}"})
    created = http(
        "POST", gateway.v1 + "/files", content=body, headers={**auth_headers(tenant), "content-type": content_type}
    )
    assert created.status_code == 502, created.text
    assert created.json()["error"]["llm_provider"] == "openai"


def test_a_stream_request_answered_without_streaming_is_an_error_not_an_empty_stream(gateway, tenant, hostile):
    """An upstream that ignores "stream": true sends one JSON document: no events, and the client must not
    read an empty stream as a complete (empty) answer."""
    name = deploy_at(gateway, "openai", f"{hostile.base}/labels/v1")
    response = chat(gateway, tenant, name, stream=True)
    assert response.status_code == 502, response.content
    assert response.json()["error"]["llm_provider"] == "openai"


# --- client headers: the one an SDK feature needs goes upstream, nothing else ------------------------------
def test_anthropic_beta_header_reaches_an_anthropic_deployment_and_nothing_else_does(gateway, tenant, upstream):
    name = deploy_at(gateway, "anthropic", upstream.base)
    beta = "context-1m-2025-08-07,interleaved-thinking-2025-05-14"
    response = messages(
        gateway,
        tenant,
        name,
        headers={
            "anthropic-beta": beta,
            "anthropic-version": "1999-01-01",
            "openai-organization": "org-client",
            "cookie": "session=client",
            "x-forwarded-for": "6.6.6.6",
        },
    )
    assert response.status_code == 200, response.text
    sent = {k.lower(): v for k, v in upstream.last("/v1/messages")["headers"].items()}
    assert sent["anthropic-beta"] == beta
    assert sent["x-api-key"] == UPSTREAM_KEY and sent["anthropic-version"] == "2023-06-01"
    assert not {"openai-organization", "cookie", "x-forwarded-for", "authorization"} & set(sent)
    assert tenant.alice_key.secret not in str(sent)


def test_an_upstream_id_is_one_escaped_path_segment_of_later_calls(gateway, tenant, hostile):
    """Ids come back from the upstream inside signed handles; "../x?y" must not re-route the gateway's calls."""
    name = deploy_at(gateway, "openai", f"{hostile.base}/odd-id/v1")
    body, content_type = multipart({"model": name, "purpose": "assistants", "file": b"{}"})
    created = http(
        "POST", gateway.v1 + "/files", content=body, headers={**auth_headers(tenant), "content-type": content_type}
    )
    assert created.status_code == 200, created.text
    hostile.loot.clear()
    fetched = http("GET", f"{gateway.v1}/files/{created.json()['id']}", headers=auth_headers(tenant))
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["path"] in (  # (yarl may leave "=" unescaped: it is harmless inside a path)
        "/odd-id/v1/files/..%2F..%2Floot%3Fsteal=1%23x",
        "/odd-id/v1/files/..%2F..%2Floot%3Fsteal%3D1%23x",
    )
    assert hostile.loot == []


def test_multi_line_sse_data_is_relayed_as_events_a_client_can_read(gateway, tenant, hostile):
    name = deploy_at(gateway, "openai", f"{hostile.base}/multiline/v1")
    response = chat(gateway, tenant, name, stream=True)
    assert response.status_code == 200
    data = sse_data(response.content)
    assert data[-1] == b"[DONE]" and orjson.loads(data[0])["choices"][0]["delta"]["content"] == "multi"

    claude = deploy_at(gateway, "anthropic", f"{hostile.base}/multiline")
    response = messages(gateway, tenant, claude, stream=True)
    assert response.status_code == 200
    assert [orjson.loads(d)["type"] for d in sse_data(response.content)][-1] == "message_stop"


@pytest.mark.parametrize("include_usage", [True, False])
def test_streamed_completions_carry_and_bill_the_upstream_usage(gateway, tenant, hostile, include_usage):
    name = deploy_at(gateway, "openai", f"{hostile.base}/legacy/v1")
    body = {"model": name, "prompt": "hi", "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    response = http("POST", gateway.v1 + "/completions", json=body, headers=auth_headers(tenant))
    assert response.status_code == 200
    usage = [orjson.loads(d).get("usage") for d in sse_data(response.content) if d != b"[DONE]"]
    assert (usage[-1] or {}).get("completion_tokens") == (1000 if include_usage else None), response.content
    event = spend_event(response.headers["x-request-id"])
    assert (event["prompt_tokens"], event["completion_tokens"]) == (900, 1000)  # the upstream's count


def test_a_gemini_error_inside_a_stream_ends_it_with_an_error_event(gateway, tenant, hostile):
    name = deploy_at(gateway, "gemini", f"{hostile.base}/gemini-fails", model="gemini-up")
    response = chat(gateway, tenant, name, stream=True)
    assert response.status_code == 200 and b"half an answer" in response.content
    last = sse_data(response.content)[-1]
    assert orjson.loads(last)["error"]["llm_provider"] == "gemini", response.content
    assert_nothing_private(response.text, hostile)


@pytest.mark.parametrize(
    ("response_format", "cost"),
    [("json", "0.009"), ("srt", "0.0655"), ("text", "0.002"), ("legacy_json", "0.002")],
)
def test_transcriptions_are_billed_by_their_audio_whatever_the_format(gateway, tenant, hostile, response_format, cost):
    """9 s reported in usage; the srt's last cue ends at 65.5 s; otherwise 32,000 bytes at 128 kbit/s: 2 s."""
    name = deploy_at(gateway, "openai", f"{hostile.base}/labels/v1", extra={"cost_per_audio_second": "0.001"})
    fields = {"model": name, "response_format": response_format, "file": b"\0" * 32_000}
    body, content_type = multipart(fields)
    headers = {**auth_headers(tenant), "content-type": content_type}
    response = http("POST", gateway.v1 + "/audio/transcriptions", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-cost"] == cost
