"""The recurring cast, so permission tests read like sentences.

- Acme (organization) has team Alpha. alice is Alpha's admin, bob is an Alpha member, vera an Alpha viewer.
- olga is an organization admin of Acme (every Acme team).
- Globex has team Omega; charlie is Omega's admin: the outsider for everything at Acme.
- root is a superuser.
"""

from __future__ import annotations

import pytest

from tests.factories import MembershipFactory, OrganizationFactory, TeamFactory, UserFactory
from tests.support.api import master_client


@pytest.fixture
def acme(db):
    return OrganizationFactory(name="Acme")


@pytest.fixture
def alpha(acme):
    return TeamFactory(organization=acme, name="Alpha")


@pytest.fixture
def globex(db):
    return OrganizationFactory(name="Globex")


@pytest.fixture
def omega(globex):
    return TeamFactory(organization=globex, name="Omega")


@pytest.fixture
def alice(alpha):
    user = UserFactory(username="alice")
    MembershipFactory(user=user, team=alpha, organization=alpha.organization, role="admin")
    return user


@pytest.fixture
def bob(alpha):
    user = UserFactory(username="bob")
    MembershipFactory(user=user, team=alpha, organization=alpha.organization, role="member")
    return user


@pytest.fixture
def vera(alpha):
    user = UserFactory(username="vera")
    MembershipFactory(user=user, team=alpha, organization=alpha.organization, role="viewer")
    return user


@pytest.fixture
def olga(acme):
    user = UserFactory(username="olga")
    MembershipFactory(user=user, team=None, organization=acme, role="admin")
    return user


@pytest.fixture
def charlie(omega):
    user = UserFactory(username="charlie")
    MembershipFactory(user=user, team=omega, organization=omega.organization, role="admin")
    return user


@pytest.fixture
def root(db):
    return UserFactory(username="root", is_superuser=True)


@pytest.fixture
def master_key(settings):
    settings.GATEWAY_MASTER_KEY = "sk-master-test-0123456789"
    return settings.GATEWAY_MASTER_KEY


@pytest.fixture
def master(master_key):
    """An API client authenticated with the master key."""
    return master_client(master_key)
