"""The /metrics scrape: label names and values of the gateway's own metrics, token protection, bounds."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from apps.ratelimit import metrics
from apps.ratelimit.backends.memory import MemoryBackend
from apps.ratelimit.errors import ProxyRateLimitError
from tests.unit.ratelimit_helpers import call, key_context, make_chain, ok, request, scope

FAILURE_LABELS = {"exception_class", "exception_status", "provider", "model", "team", "key_alias", "route"}


def scrape(client, **headers) -> dict[str, list]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def matching(samples: list, **labels) -> list:
    return [s for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]


async def test_a_refusal_and_a_success_are_scraped_with_their_labels(client, db):
    model = f"gpt-{uuid.uuid4().hex[:8]}"
    chain = make_chain(MemoryBackend())
    key = key_context(scope("key", rpm_limit=1, tpm_limit=1000, max_budget="5"), key_alias="billing-bot")
    answered = ok(prompt_tokens=7, completion_tokens=3, cost=Decimal("0.25"), latency_ms=12.0, ttft_ms=4.0)
    await call(chain, request(key, model=model, deployment_id=7), answered)
    with pytest.raises(ProxyRateLimitError):
        await call(chain, request(key, model=model, deployment_id=7), ok(429, error_type="ProxyRateLimitError"))

    samples = await _scrape_async(client)
    failures = matching(samples["gateway_failures_total"], model=model)
    assert len(failures) == 1
    failure = failures[0]
    assert set(failure.labels) == FAILURE_LABELS
    assert failure.labels == {
        "exception_class": "Openai.ProxyRateLimitError",
        "exception_status": "429",
        "provider": "openai",
        "model": model,
        "team": "Alpha",
        "key_alias": "billing-bot",
        "route": "/v1/chat/completions",
    }
    assert failure.value == 1
    requests = matching(samples["gateway_requests_total"], model=model)
    assert sorted((s.labels["status"], s.value) for s in requests) == [("200", 1.0), ("429", 1.0)]
    tokens = {s.labels["kind"]: s.value for s in matching(samples["gateway_tokens_total"], model=model)}
    assert tokens == {"prompt": 7.0, "completion": 3.0}
    assert matching(samples["gateway_spend_usd_total"], model=model)[0].value == pytest.approx(0.25)
    assert matching(samples["gateway_request_latency_seconds_count"], model=model)[0].value == 2
    assert matching(samples["gateway_time_to_first_token_seconds_count"], model=model)[0].value == 1
    remaining = matching(samples["gateway_remaining_requests"], scope="key", key_alias="billing-bot")
    assert remaining and remaining[0].value == 0
    budget = matching(samples["gateway_remaining_budget_usd"], scope="key", key_alias="billing-bot")
    assert budget and 0 < budget[0].value <= 5
    # The refused request never reached the deployment: one success, no failure.
    deployments = matching(samples["gateway_deployment_requests_total"], model=model)
    assert [(s.labels["deployment_id"], s.labels["outcome"], s.value) for s in deployments] == [("7", "success", 1.0)]
    in_flight = matching(samples["gateway_in_flight_requests"], route="/v1/chat/completions")
    assert in_flight and in_flight[0].value == 0


async def _scrape_async(client):
    from asgiref.sync import sync_to_async

    return await sync_to_async(scrape)(client)


def test_metrics_token_is_required_when_set(client, db, settings):
    settings.METRICS_TOKEN = "metrics-secret-123"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert "gateway_requests_total" in client.get("/metrics", HTTP_AUTHORIZATION="Bearer metrics-secret-123").text
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("remote,status", [("127.0.0.1", 200), ("::1", 200), ("10.0.0.5", 403), ("", 403)])
def test_metrics_without_a_token_answer_loopback_clients_only(client, db, settings, remote, status):
    """Every tenant's team names, key aliases, models and spend are in the scrape: no token, no network."""
    settings.METRICS_TOKEN = ""
    response = client.get("/metrics", REMOTE_ADDR=remote)
    assert response.status_code == status
    assert ("gateway_requests_total" in response.text) is (status == 200)


def test_metrics_with_a_token_answer_by_any_host_name(client, db, settings):
    """Prometheus scrapes by pod IP; with the token the bearer guards the scrape, not the host name."""
    settings.ALLOWED_HOSTS = ["gw.example.com"]
    settings.METRICS_TOKEN = "metrics-secret-123"
    assert client.get("/metrics", HTTP_HOST="10.1.2.3:4000").status_code == 401
    response = client.get("/metrics", HTTP_HOST="10.1.2.3:4000", HTTP_AUTHORIZATION="Bearer metrics-secret-123")
    assert response.status_code == 200
    settings.METRICS_TOKEN = ""  # the embedded default keeps the host check (DNS rebinding)
    assert client.get("/metrics", HTTP_HOST="10.1.2.3:4000").status_code == 400


def test_label_values_are_bounded(monkeypatch):
    monkeypatch.setattr(metrics, "_seen", {})
    monkeypatch.setattr(metrics, "MAX_LABEL_VALUES", 3)
    assert [metrics.bounded("model", f"m{i}") for i in range(5)] == ["m0", "m1", "m2", "other", "other"]
    assert metrics.bounded("model", "m1") == "m1"
    assert len(metrics.bounded("team", "x" * 500)) == metrics.MAX_LABEL_LENGTH


@pytest.mark.parametrize(
    ("status", "error_type", "expected"),
    [
        (429, "upstream_rate_limit", "Openai.RateLimitError"),  # the provider's own 429, relayed
        (504, "upstream_timeout", "Openai.Timeout"),
        (502, "upstream_bad_response", "Openai.APIConnectionError"),
        (499, "client_disconnect", "Openai.ClientDisconnect"),
        (500, "weird", "Openai.InternalServerError"),
    ],
)
def test_other_failures_are_named_like_the_openai_sdk_errors(status, error_type, expected):
    from apps.ratelimit.observe import exception_class

    ctx = request(key_context())
    assert exception_class(ctx, ok(status, error_type=error_type)) == expected
