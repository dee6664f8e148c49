"""Every /v1 request is counted in Prometheus, the ones refused before the limiters included.

Against a real gateway process: 401, 400, 403, 404 (unknown model, unknown URL) and 413 answers each add
one to ``gateway_requests_total`` and ``gateway_failures_total``, labelled without raw keys, and names
a client made up (models, paths) never become label values.
"""

from __future__ import annotations

import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import deploy, http, make_key, unique_name

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def scrape(gateway) -> tuple[str, list]:
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    return text, samples


def count(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def chat(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "ping"}]}


def test_answers_refused_before_the_limiters_are_counted(gateway, upstream, tenant):
    model = unique_name()
    other = unique_name()
    deploy(
        gateway,
        {"model_name": model, "provider": "openai", "model": "gpt-up", "api_base": upstream.url},
        {"model_name": other, "provider": "openai", "model": "gpt-up", "api_base": upstream.url},
    )
    narrow = make_key(tenant.alpha, tenant.alice, alias="narrow-key", allowed_models=[other])
    alice = {"Authorization": f"Bearer {tenant.alice_key.secret}"}
    url = gateway.v1 + "/chat/completions"
    made_up = [f"no-such-model-{uuid.uuid4().hex}" for _ in range(5)]
    made_up_path = f"/v1/no-such-route-{uuid.uuid4().hex}"
    chat_route = "/v1/chat/completions"
    _, before = scrape(gateway)

    answers = [
        http("POST", url, json=chat(model)).status_code,  # no key
        http("POST", url, json=chat(model), headers={"Authorization": "Bearer sk-not-a-key-0123456789"}).status_code,
        http("POST", url, json={"model": model}, headers=alice).status_code,  # no messages
        http("POST", url, json=chat(model), headers={"Authorization": f"Bearer {narrow.secret}"}).status_code,
        *(http("POST", url, json=chat(name), headers=alice).status_code for name in made_up),
        http("POST", url, content=b"{" + b" " * 70_000 + b"}", headers=alice).status_code,  # over 64 KiB
        http("GET", gateway.url + made_up_path, headers=alice).status_code,
        http("POST", url, json=chat(model), headers=alice).status_code,  # and one that works
    ]
    assert answers == [401, 401, 400, 403, 404, 404, 404, 404, 404, 413, 404, 200]

    text, after = scrape(gateway)

    def delta(name: str, **labels: str) -> float:
        return count(after, name, **labels) - count(before, name, **labels)

    requests, failures = "gateway_requests_total", "gateway_failures_total"
    assert delta(requests, route=chat_route, provider="gateway", team="", key_alias="", status="401") == 2
    assert delta(failures, exception_class="Gateway.AuthenticationError", exception_status="401", route=chat_route) == 2
    assert delta(requests, route=chat_route, team="Alpha", key_alias="alice-key", status="400") == 1
    bad_request = {"exception_class": "Gateway.BadRequestError", "exception_status": "400"}
    assert delta(failures, **bad_request, key_alias="alice-key") == 1
    # A refused model that exists is named; the key is named by its alias, never by its secret.
    assert delta(requests, route=chat_route, model=model, key_alias="narrow-key", status="403") == 1
    assert delta(failures, exception_class="Gateway.PermissionDeniedError", key_alias="narrow-key") == 1
    # Made-up model names all land on one label value.
    assert delta(requests, route=chat_route, model="unknown", key_alias="alice-key", status="404") == 5
    assert delta(failures, exception_class="Gateway.NotFoundError", model="unknown", exception_status="404") == 5
    assert delta(requests, route=chat_route, key_alias="alice-key", status="413") == 1
    assert delta(requests, route="unknown", key_alias="", status="404") == 1
    assert delta(requests, route=chat_route, model=model, provider="openai", key_alias="alice-key", status="200") == 1
    # Each request once: nothing else was counted.
    assert delta(requests) == len(answers)
    assert delta(failures) == len(answers) - 1

    for secret in (tenant.alice_key.secret, narrow.secret, "sk-not-a-key-0123456789", *made_up, made_up_path):
        assert secret not in text
