"""Model names resolve within the key's organization: no tenant can shadow another's names (issue 11, item 2).

Order inside one organization (docs/proxy.md): its own private deployments of the name, then the shared
deployments of that exact name, then a shared alias (its target looked up the same way). Acme (alice)
relies on shared names and aliases; Globex (charlie) deploys private models with the same names.
"""

from __future__ import annotations

import time

import pytest

from apps.common.invalidation import publish_invalidation
from apps.proxy.models import ModelAlias, ModelGroup
from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import deploy, http, unique_name

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def chat(gateway, key: str, model: str):
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return http("POST", gateway.v1 + "/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})


def served_by(gateway, key: str, model: str) -> str:
    """The upstream model id that answered (the mock upstream echoes it), or the error status."""
    response = chat(gateway, key, model)
    return response.json()["model"] if response.status_code == 200 else f"{response.status_code}: {response.text}"


def listed(gateway, key: str) -> set[str]:
    response = http("GET", gateway.v1 + "/models", headers={"Authorization": f"Bearer {key}"})
    return {m["id"] for m in response.json()["data"]}


def wait_until(check, timeout: float = 20.0) -> None:
    """Until the gateway picked up a change (the registry reloads on the Redis invalidation)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the gateway never picked the change up"
        time.sleep(0.1)


def globex_deploys(gateway, upstream, tenant, name: str) -> None:
    """Globex's own deployment named ``name``, answering as upstream model ``gpt-globex``."""
    spec = {"model_name": name, "provider": "openai", "model": "gpt-globex", "api_base": upstream.url}
    deploy(gateway, {**spec, "organization": tenant.globex}, wait=False)
    wait_until(lambda: served_by(gateway, tenant.charlie_key.secret, name) == "gpt-globex")


def test_a_shared_alias_keeps_working_when_another_organization_deploys_its_name(gateway, upstream, tenant):
    target, alias = unique_name(), unique_name("alias")
    deploy(gateway, {"model_name": target, "provider": "openai", "model": "gpt-shared", "api_base": upstream.url})
    ModelAlias.objects.create(alias=alias, model_name=target)
    publish_invalidation("test alias")
    alice = tenant.alice_key.secret
    wait_until(lambda: alias in listed(gateway, alice))
    assert served_by(gateway, alice, alias) == "gpt-shared"

    globex_deploys(gateway, upstream, tenant, alias)

    assert served_by(gateway, alice, alias) == "gpt-shared"
    assert alias in listed(gateway, alice)
    detail = http("GET", f"{gateway.v1}/models/{alias}", headers={"Authorization": f"Bearer {alice}"})
    assert detail.status_code == 200 and detail.json()["id"] == alias
    # Inside Globex its own deployment wins over the shared alias; the alias' target is still the shared one.
    charlie = tenant.charlie_key.secret
    assert {served_by(gateway, charlie, alias) for _ in range(5)} == {"gpt-globex"}
    assert served_by(gateway, charlie, target) == "gpt-shared"


def test_a_shared_name_keeps_working_when_another_organization_deploys_it_privately(gateway, upstream, tenant):
    name = unique_name()
    deploy(gateway, {"model_name": name, "provider": "openai", "model": "gpt-shared", "api_base": upstream.url})

    globex_deploys(gateway, upstream, tenant, name)

    alice = tenant.alice_key.secret
    assert {served_by(gateway, alice, name) for _ in range(5)} == {"gpt-shared"}
    assert name in listed(gateway, alice) and name in listed(gateway, tenant.charlie_key.secret)
    # Globex's own deployments of the name replace the shared ones for Globex (not merged with them).
    assert {served_by(gateway, tenant.charlie_key.secret, name) for _ in range(10)} == {"gpt-globex"}


def test_fallbacks_resolve_within_the_organization_too(gateway, upstream, tenant):
    """A group's fallback named by a shared alias still reaches the shared target when Globex deploys the alias."""
    primary, backup, alias = unique_name(), unique_name(), unique_name("alias")
    deploy(
        gateway,
        {"model_name": primary, "provider": "openai", "model": "fail-500", "api_base": upstream.url},
        {"model_name": backup, "provider": "openai", "model": "gpt-backup", "api_base": upstream.url},
    )
    ModelAlias.objects.create(alias=alias, model_name=backup)
    ModelGroup.objects.create(model_name=primary, fallbacks=[alias], num_retries=0)
    publish_invalidation("test group")
    alice = tenant.alice_key.secret
    wait_until(lambda: served_by(gateway, alice, primary) == "gpt-backup")

    globex_deploys(gateway, upstream, tenant, alias)

    assert served_by(gateway, alice, primary) == "gpt-backup"
    assert served_by(gateway, tenant.charlie_key.secret, primary) == "gpt-globex"  # Globex's own, by the same rule
