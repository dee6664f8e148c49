"""factory-boy factories for the recurring cast (see tests/conftest.py)."""

from __future__ import annotations

import time
import uuid

import factory

from apps.keys.hashing import display_prefix, generate_secret, keyed_hash
from apps.keys.models import VirtualKey
from apps.proxy.models import ModelDeployment
from apps.spend.events import SpendEvent
from apps.teams.models import Customer, Membership, Organization, Team, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    is_staff = True
    password = factory.django.Password("correct horse battery")


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Org {n}")


class TeamFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Team

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Team {n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    team = factory.SubFactory(TeamFactory)
    organization = factory.LazyAttribute(lambda o: o.team.organization if o.team else OrganizationFactory())
    role = "member"


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    organization = factory.SubFactory(OrganizationFactory)
    external_id = factory.Sequence(lambda n: f"end-user-{n}")


class VirtualKeyFactory(factory.django.DjangoModelFactory):
    """Builds a key row; the plain secret is kept on the object as ``key.secret`` for the test."""

    class Meta:
        model = VirtualKey

    secret = factory.LazyFunction(generate_secret)
    key_hash = factory.LazyAttribute(lambda o: keyed_hash(o.secret))
    prefix = factory.LazyAttribute(lambda o: display_prefix(o.secret))
    team = factory.SubFactory(TeamFactory)
    organization = factory.LazyAttribute(lambda o: o.team.organization)
    alias = factory.Sequence(lambda n: f"key-{n}")

    @classmethod
    def _create(cls, model_class, *args, secret, **kwargs):
        obj = super()._create(model_class, *args, **kwargs)
        obj.secret = secret
        return obj


class DeploymentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelDeployment

    model_name = "gpt-4o-mini"
    provider = "mock"
    model = "mock-gpt"
    input_cost_per_token = "0.00000015"
    output_cost_per_token = "0.0000006"


def _from_key(attribute: str, default=None):
    return factory.LazyAttribute(lambda o: getattr(o.key, attribute) if o.key is not None else default)


class SpendEventFactory(factory.Factory):
    """One finished request's spend event, as the proxy emits it (a dataclass, not a row: ingest it).

    ``key=<VirtualKey>`` fills the tenant ids, the alias and the user from the key row, as the proxy
    fills them from the key's context; any field can still be given (``user_id=None``, ``model=""``).
    """

    class Meta:
        model = SpendEvent

    class Params:
        key = None

    request_id = factory.LazyFunction(lambda: uuid.uuid4().hex)
    created_at = factory.LazyFunction(time.time)
    route = "/v1/chat/completions"
    status = 200
    model = "gpt-4o-mini"
    organization_id = _from_key("organization_id")
    team_id = _from_key("team_id")
    key_id = _from_key("pk")
    key_alias = _from_key("alias", "")
    user_id = _from_key("user_id")
