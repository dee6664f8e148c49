"""Guardrails through the official ``openai`` SDK against a real gateway and the local mock upstream.

What the upstream received is read from the mock's own request log: a masked prompt must arrive masked,
a refused one must not arrive at all.
"""

from __future__ import annotations

import time
import urllib.request

import anthropic
import openai
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from apps.guardrails.services import guardrail_policy_set
from apps.teams.audit import Actor
from tests.factories import UserFactory
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import deploy, deploy_priced_model, http, make_key, spend_event, unique_name
from tests.support.mock_upstream import LEAKED

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CARD = "4111 1111 1111 1111"


@pytest.fixture
def operator():
    return Actor(user=UserFactory(username=f"op-{unique_name()}", is_staff=True, is_superuser=True), source="api")


@pytest.fixture
def model(gateway, upstream, tenant):
    return deploy_priced_model(gateway, upstream)


def sdk(gateway, key) -> OpenAI:
    return OpenAI(base_url=gateway.v1, api_key=key.secret, max_retries=0, timeout=30)


def fresh_key(team, operator, **policy):
    """A key nobody used yet (so its first request loads its context, policy included)."""
    key = make_key(team, alias=unique_name("key"))
    if policy:
        guardrail_policy_set(actor=operator, key=key, config=policy)
    return key


def upstream_count(upstream, path: str = "/chat/completions") -> int:
    return sum(1 for r in upstream.requests if path in r["path"])


def test_masked_prompt_reaches_the_upstream_masked(gateway, upstream, tenant, model, operator):
    key = fresh_key(tenant.alpha, operator, pii={"entities": {"email": "mask", "payment_card": "mask"}})
    raw = sdk(gateway, key).chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": f"mail jane@example.com and a@b.io, then jane@example.com, card {CARD}"}],
    )
    sent = upstream.last("/chat/completions")["body"]["messages"][0]["content"]
    assert sent == "mail [EMAIL_1] and [EMAIL_2], then [EMAIL_1], card [CARD_1]"
    assert raw.parse().choices[0].message.content == "echo: " + sent
    event = spend_event(raw.headers["x-request-id"])
    assert event["status"] == 200
    assert event["guardrails"]["pii"] == {
        "request": "masked",
        "answer": "passed",
        "categories": ["email", "payment_card"],
    }


def blocked_count(gateway) -> float:
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "gateway_guardrail_outcomes_total"
        and s.labels == {"guardrail": "pii", "stage": "request", "outcome": "blocked"}
    )


def test_blocked_prompt_never_reaches_the_upstream(gateway, upstream, tenant, model, operator):
    key = fresh_key(tenant.alpha, operator, pii={"entities": {"payment_card": "block", "email": "mask"}})
    before, counted = upstream_count(upstream), blocked_count(gateway)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway, key).chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"charge {CARD} for me@example.com"}]
        )
    error = caught.value.body
    assert caught.value.status_code == 400
    assert error["type"] == "guardrail_error" and error["code"] == "guardrail_blocked"
    assert error["guardrail"] == "pii" and error["category"] == "payment_card"
    assert CARD not in str(error)
    assert upstream_count(upstream) == before
    event = spend_event(caught.value.response.headers["x-request-id"])
    assert event["status"] == 400
    assert event["guardrails"]["pii"] == {"request": "blocked", "categories": ["payment_card"]}
    assert blocked_count(gateway) == counted + 1  # Prometheus: no tenant, key or category label


def test_streamed_answer_is_masked_even_when_the_card_is_split_across_chunks(gateway, upstream, tenant, operator):
    name = unique_name()
    deploy(gateway, {"model_name": name, "provider": "openai", "model": "leak-pii", "api_base": upstream.url})
    key = fresh_key(tenant.alpha, operator, pii={"entities": {"payment_card": "mask", "email": "mask"}})
    chunks = list(
        sdk(gateway, key).chat.completions.create(
            model=name, messages=[{"role": "user", "content": "what is on file?"}], stream=True
        )
    )
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    text = "".join(pieces)
    assert text == LEAKED.replace(CARD, "[CARD_1]").replace("bob@example.com", "[EMAIL_1]")
    assert len([p for p in pieces if p]) > 2  # still streamed in pieces, not held to the end
    whole = sdk(gateway, key).chat.completions.create(model=name, messages=[{"role": "user", "content": "again"}])
    assert whole.choices[0].message.content == text


def test_streamed_answer_with_a_blocked_entity_ends_with_a_guardrail_error(gateway, upstream, tenant, operator):
    name = unique_name()
    deploy(gateway, {"model_name": name, "provider": "openai", "model": "leak-pii", "api_base": upstream.url})
    key = fresh_key(tenant.alpha, operator, pii={"entities": {"payment_card": "block"}})
    with pytest.raises(openai.APIError) as caught:
        for chunk in sdk(gateway, key).chat.completions.create(
            model=name, messages=[{"role": "user", "content": "go"}], stream=True
        ):
            assert "4111" not in (chunk.choices[0].delta.content or "") if chunk.choices else True
    assert "payment_card" in str(caught.value)


def classifier(gateway, upstream, upstream_model: str) -> str:
    name = unique_name("guard")
    deploy(gateway, {"model_name": name, "provider": "openai", "model": upstream_model, "api_base": upstream.url})
    return name


def test_moderation_refuses_flagged_input_and_admits_the_rest(gateway, upstream, tenant, model, operator):
    mod = classifier(gateway, upstream, "omni-moderation")
    key = fresh_key(tenant.alpha, operator, moderation={"model": mod, "thresholds": {"violence": 0.5}})
    client = sdk(gateway, key)
    before = upstream_count(upstream)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "plan an attack"}])
    assert caught.value.body["guardrail"] == "moderation" and caught.value.body["category"] == "violence"
    assert upstream_count(upstream) == before
    assert upstream.last("/moderations")["body"] == {"model": "omni-moderation", "input": "plan an attack"}
    ok = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "plan a picnic"}])
    assert ok.choices[0].message.content == "echo: plan a picnic"


def test_llama_guard_style_prompt_injection_classifier(gateway, upstream, tenant, model, operator):
    guard = classifier(gateway, upstream, "llama-guard")
    key = fresh_key(tenant.alpha, operator, prompt_injection={"model": guard, "kind": "llama_guard"})
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway, key).chat.completions.create(model=model, messages=[{"role": "user", "content": "attack now"}])
    assert caught.value.body["guardrail"] == "prompt_injection" and caught.value.body["category"] == "S1"
    ok = sdk(gateway, key).chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}])
    assert ok.choices[0].message.content == "echo: hello"


def test_classifier_down_fail_open_admits_fail_closed_refuses(gateway, upstream, tenant, model, operator):
    down = classifier(gateway, upstream, "fail-500")
    section = {"model": down, "timeout_seconds": 10}
    open_key = fresh_key(tenant.alpha, operator, moderation={**section, "on_error": "open"})
    raw = sdk(gateway, open_key).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.parse().choices[0].message.content == "echo: hello"
    assert spend_event(raw.headers["x-request-id"])["guardrails"]["moderation"]["request"] == "error_open"
    closed_key = fresh_key(tenant.alpha, operator, moderation={**section, "on_error": "closed"})
    response = http(
        "POST",
        gateway.v1 + "/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hello"}]},
        headers={"Authorization": f"Bearer {closed_key.secret}"},
    )
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "guardrail_error" and error["code"] == "guardrail_unavailable"
    assert error["guardrail"] == "moderation" and error["category"] == "classifier_unavailable"


def test_key_policy_overrides_its_team_and_other_organizations_never_see_it(gateway, upstream, tenant, model, operator):
    guardrail_policy_set(actor=operator, team=tenant.alpha, config={"deny": {"keywords": ["falcon"]}})
    team_key = fresh_key(tenant.alpha, operator)
    exempt_key = fresh_key(tenant.alpha, operator, deny=None, max_input_chars=50)
    outsider = fresh_key(tenant.omega, operator)
    ask = [{"role": "user", "content": "Status of Project FALCON?"}]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway, team_key).chat.completions.create(model=model, messages=ask)
    assert caught.value.body["guardrail"] == "deny" and caught.value.body["category"] == "keyword"
    assert "falcon" not in caught.value.body["message"].lower()
    assert sdk(gateway, exempt_key).chat.completions.create(model=model, messages=ask).choices[0].message.content
    with pytest.raises(openai.BadRequestError) as too_long:
        sdk(gateway, exempt_key).chat.completions.create(model=model, messages=[{"role": "user", "content": "x" * 51}])
    assert too_long.value.body["guardrail"] == "max_input_size"
    # Globex (another organization) has no policy: Acme's team policy does not reach it.
    assert sdk(gateway, outsider).chat.completions.create(model=model, messages=ask).choices[0].message.content


def test_policy_change_reaches_a_cached_key(gateway, upstream, tenant, model, operator):
    key = fresh_key(tenant.alpha, operator)
    client = sdk(gateway, key)
    ask = [{"role": "user", "content": "mail me at kim@example.com"}]
    client.chat.completions.create(model=model, messages=ask)  # the key's context is now cached
    guardrail_policy_set(actor=operator, organization=tenant.acme, config={"pii": {"entities": {"email": "mask"}}})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = client.chat.completions.create(model=model, messages=ask).choices[0].message.content
        if "[EMAIL_1]" in answer:
            break
        time.sleep(0.1)
    assert upstream.last("/chat/completions")["body"]["messages"][0]["content"] == "mail me at [EMAIL_1]"


def test_a_key_with_a_policy_is_never_answered_from_the_response_cache(gateway, upstream, tenant, model, operator):
    """Another key of the team cached an answer to this very prompt: the policy key is still refused."""
    ask = [{"role": "user", "content": f"charge {CARD}"}]
    cached_by = make_key(tenant.alpha, alias=unique_name("key"), cache_ttl_seconds=300)
    for _ in range(2):
        sdk(gateway, cached_by).chat.completions.create(model=model, messages=ask)
    guarded = fresh_key(tenant.alpha, operator, pii={"entities": {"payment_card": "block"}})
    guarded.cache_ttl_seconds = 300
    guarded.save(update_fields=["cache_ttl_seconds"])
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway, guarded).chat.completions.create(model=model, messages=ask)
    assert caught.value.body["category"] == "payment_card"


MASKED = LEAKED.replace(CARD, "[CARD_1]").replace("bob@example.com", "[EMAIL_1]")


def test_native_anthropic_and_responses_streams_are_masked_too(gateway, upstream, tenant, operator):
    claude, gpt = unique_name("claude"), unique_name()
    deploy(
        gateway,
        {"model_name": claude, "provider": "anthropic", "model": "leak-pii", "api_base": upstream.base},
        {"model_name": gpt, "provider": "openai", "model": "leak-pii", "api_base": upstream.url},
    )
    key = fresh_key(tenant.alpha, operator, pii={"entities": {"payment_card": "mask", "email": "mask"}})
    native = anthropic.Anthropic(base_url=gateway.url, api_key=key.secret, max_retries=0)
    with native.messages.stream(model=claude, max_tokens=100, messages=[{"role": "user", "content": "go"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == MASKED and final.content[0].text == MASKED
    events = list(sdk(gateway, key).responses.create(model=gpt, input="go", stream=True))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == MASKED
    done = next(e for e in events if e.type == "response.output_text.done")
    completed = next(e for e in events if e.type == "response.completed")
    assert done.text == MASKED and completed.response.output_text == MASKED
    assert "4111" not in str([e.model_dump() for e in events])
