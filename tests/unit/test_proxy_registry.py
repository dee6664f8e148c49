"""Model name resolution per organization (``Registry.resolve``), from real rows through ``load_registry``.

Acme and Globex share the superuser's deployments and aliases; each may deploy models of its own.
"""

from __future__ import annotations

import pytest

from apps.proxy.models import ModelAlias, ModelGroup
from apps.proxy.registry import load_registry
from tests.factories import DeploymentFactory, OrganizationFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def orgs():
    return OrganizationFactory(name="Acme"), OrganizationFactory(name="Globex")


def served(group) -> set[str]:
    return {d.model for d in group.deployments}


def test_another_organizations_private_name_shadows_neither_a_shared_alias_nor_a_shared_name(orgs):
    acme, globex = orgs
    DeploymentFactory(model_name="mock-shared", model="shared-up")
    DeploymentFactory(model_name="gpt-4o", model="shared-4o")
    ModelAlias.objects.create(alias="gpt-4", model_name="mock-shared")
    DeploymentFactory(model_name="gpt-4", model="globex-4", organization=globex)
    DeploymentFactory(model_name="gpt-4o", model="globex-4o", organization=globex)
    registry = load_registry()

    assert served(registry.resolve("gpt-4", acme.pk)) == {"shared-up"}
    assert served(registry.resolve("gpt-4o", acme.pk)) == {"shared-4o"}
    assert {"gpt-4", "gpt-4o", "mock-shared"} <= set(registry.public_names(acme.pk))
    # Inside Globex its own deployments win, over the alias and over the shared deployments of the name.
    assert served(registry.resolve("gpt-4", globex.pk)) == {"globex-4"}
    assert served(registry.resolve("gpt-4o", globex.pk)) == {"globex-4o"}
    assert registry.resolve("gpt-4o", globex.pk).shared is False
    assert registry.resolve("gpt-4o", acme.pk).shared is True


def test_private_names_exist_only_for_their_organization_and_the_master_key(orgs):
    acme, globex = orgs
    DeploymentFactory(model_name="mock-shared", model="shared-up")
    DeploymentFactory(model_name="globex-only", model="globex-up", organization=globex)
    DeploymentFactory(model_name="gpt-4", model="globex-4", organization=globex)
    ModelAlias.objects.create(alias="gpt-4", model_name="mock-shared")
    ModelAlias.objects.create(alias="to-globex", model_name="globex-only")
    registry = load_registry()

    assert registry.resolve("globex-only", acme.pk) is None
    assert registry.resolve("to-globex", acme.pk) is None  # an alias to a name Acme cannot see is not Acme's
    assert set(registry.public_names(acme.pk)) == {"mock-shared", "gpt-4"}
    assert served(registry.resolve("to-globex", globex.pk)) == {"globex-up"}
    assert set(registry.public_names(globex.pk)) == {"mock-shared", "gpt-4", "globex-only", "to-globex"}
    # The master key: shared names, then aliases, then any organization's private deployments.
    assert served(registry.resolve("gpt-4", is_master=True)) == {"shared-up"}
    assert served(registry.resolve("globex-only", is_master=True)) == {"globex-up"}
    assert set(registry.public_names(is_master=True)) == {"mock-shared", "gpt-4", "globex-only", "to-globex"}


def test_a_private_group_gets_the_routing_settings_of_its_name(orgs):
    _acme, globex = orgs
    DeploymentFactory(model_name="gpt-4o", model="globex-4o", organization=globex)
    ModelGroup.objects.create(model_name="gpt-4o", strategy="least-busy", fallbacks=["mock-shared"])
    group = load_registry().resolve("gpt-4o", globex.pk)
    assert (group.strategy, group.fallbacks) == ("least-busy", ("mock-shared",))
