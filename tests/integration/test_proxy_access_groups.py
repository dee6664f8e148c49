"""Access groups and wildcards against a running gateway, over real HTTP (issue 15, part 5).

A key naming a group reaches exactly its members, a pattern reaches the names it matches (and a model
deployed later), /v1/models lists exactly what the key may call, and a group changed through the REST
API or the admin takes effect in the running gateway (the services publish the invalidation, every
worker rebuilds its key contexts). Refusal is the proxy's usual 403 ``model_not_allowed``.

The gateway process is shared by the session: model names are unique per test, and pattern checks
assert on this test's names only.
"""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.test import Client

from apps.teams.models import ModelAccessGroup
from tests.factories import MembershipFactory, UserFactory
from tests.support.api import client_for
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import deploy, http, make_key, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _needs_redis():
    if not settings.REDIS_URL:
        pytest.skip("needs the Redis started by scripts/test.sh")


def chat(gateway, key: str, model: str):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return http("POST", gateway.v1 + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


def status(gateway, key: str, model: str) -> int:
    return chat(gateway, key, model).status_code


def listed(gateway, key: str) -> set[str]:
    response = http("GET", gateway.v1 + "/models", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return {m["id"] for m in response.json()["data"]}


def wait_until(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the gateway never picked the change up"
        time.sleep(0.1)


def models(gateway, upstream, *names: str, provider: str = "openai") -> None:
    specs = [{"model_name": n, "provider": provider, "model": "gpt-up", "api_base": upstream.url} for n in names]
    deploy(gateway, *specs)


def assert_refused(gateway, key: str, model: str) -> None:
    response = chat(gateway, key, model)
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "model_not_allowed" and error["param"] == "model" and model in error["message"]


def test_a_key_naming_a_group_reaches_its_members_and_not_others(gateway, upstream, tenant):
    big, small, other = unique_name("big"), unique_name("small"), unique_name("other")
    models(gateway, upstream, big, small, other)
    group = unique_name("family")
    ModelAccessGroup.objects.create(name=group, members=[big, small], organization=tenant.acme)
    key = make_key(tenant.alpha, tenant.alice, allowed_models=[group]).secret

    assert status(gateway, key, big) == 200 and status(gateway, key, small) == 200
    assert_refused(gateway, key, other)
    assert status(gateway, key, group) == 404  # a group's name is not a model: unknown, like any other
    mine = listed(gateway, key)
    assert {big, small} <= mine and other not in mine and group not in mine
    # Charlie's organization has no group of that name: for his key it is a plain (unknown) model name.
    charlie = make_key(tenant.omega, tenant.charlie, allowed_models=[group]).secret
    assert status(gateway, charlie, big) == 403 and listed(gateway, charlie) & {big, small} == set()


def test_a_pattern_reaches_what_it_matches_including_a_model_deployed_later(gateway, upstream, tenant):
    stem = unique_name("claude")  # claude-<hex>: the pattern below is this test's own family
    first, second, outsider = f"{stem}-sonnet", f"{stem}-haiku", unique_name("gpt")
    models(gateway, upstream, first, second, outsider)
    key = make_key(tenant.alpha, tenant.alice, allowed_models=[f"{stem}-*"]).secret

    assert status(gateway, key, first) == 200 and status(gateway, key, second) == 200
    assert_refused(gateway, key, outsider)
    assert listed(gateway, key) == {first, second}

    later = f"{stem}-opus"
    models(gateway, upstream, later)  # a deployment write invalidates every worker's key contexts
    wait_until(lambda: status(gateway, key, later) == 200)
    assert listed(gateway, key) == {first, second, later}


def test_a_provider_pattern_reaches_the_models_that_provider_serves(gateway, upstream, tenant):
    on_mock, on_openai = unique_name("local"), unique_name("remote")
    deploy(gateway, {"model_name": on_mock, "provider": "mock", "model": "mock-up"})
    models(gateway, upstream, on_openai)
    key = make_key(tenant.alpha, tenant.alice, allowed_models=["mock/*"]).secret

    assert status(gateway, key, on_mock) == 200
    assert_refused(gateway, key, on_openai)
    mine = listed(gateway, key)
    assert on_mock in mine and on_openai not in mine


def test_a_key_cannot_widen_its_teams_group(gateway, upstream, tenant):
    allowed, other = unique_name("allowed"), unique_name("other")
    models(gateway, upstream, allowed, other)
    group = unique_name("team-set")
    ModelAccessGroup.objects.create(name=group, members=[allowed], organization=tenant.acme)
    tenant.alpha.allowed_models = [group]
    tenant.alpha.save()
    key = make_key(tenant.alpha, tenant.alice, allowed_models=["*"]).secret

    assert status(gateway, key, allowed) == 200
    assert_refused(gateway, key, other)
    assert listed(gateway, key) == {allowed}


def test_a_group_changed_through_the_api_and_the_admin_takes_effect_in_the_running_gateway(gateway, upstream, tenant):
    first, second = unique_name("first"), unique_name("second")
    models(gateway, upstream, first, second)
    olga = UserFactory(username=unique_name("olga"), is_staff=True)
    MembershipFactory(user=olga, team=None, organization=tenant.acme, role="admin")
    api = client_for(olga)
    name = unique_name("grp")
    created = api.post(
        "/api/v1/access-groups/", {"organization": tenant.acme.pk, "name": name, "models": [first]}, format="json"
    )
    assert created.status_code == 201, created.content
    key = make_key(tenant.alpha, tenant.alice, allowed_models=[name]).secret
    assert status(gateway, key, first) == 200
    assert_refused(gateway, key, second)  # the key's context is now cached by the gateway

    changed = api.patch(f"/api/v1/access-groups/{created.json()['id']}/", {"models": [second]}, format="json")
    assert changed.status_code == 200, changed.content
    wait_until(lambda: status(gateway, key, second) == 200)
    assert_refused(gateway, key, first)

    admin = Client()
    admin.force_login(olga)
    page = f"/admin/teams/modelaccessgroup/{created.json()['id']}/change/"
    response = admin.post(page, {"name": name, "members": f"{first}, {second}", "description": ""})
    assert response.status_code == 302, response.content.decode()[:2000]
    wait_until(lambda: status(gateway, key, first) == 200)
    assert listed(gateway, key) == {first, second}

    assert api.delete(f"/api/v1/access-groups/{created.json()['id']}/").status_code == 204
    # Gone: the name is a plain model name again, which no deployment has.
    wait_until(lambda: status(gateway, key, first) == 403)
    assert listed(gateway, key) == set()
