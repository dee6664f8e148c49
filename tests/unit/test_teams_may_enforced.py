"""The REST API and the admin refuse exactly when ``may()`` says no, as each member of the cast observes it.

For every request the answer is predicted from ``may`` before it is sent: an object the caller may not
see is a 404 (a 400 "does not exist" when it is named in the body, a redirect in the admin); one they
see but may not act on is a 403 (a read-only page in the admin); otherwise the request succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from django.test import Client

from apps.keys.models import ApiToken, VirtualKey
from apps.teams.admin_base import reaches_any
from apps.teams.models import Membership
from apps.teams.scoping import CHANGE, DELETE, VIEW, may
from tests.factories import CustomerFactory, DeploymentFactory, VirtualKeyFactory
from tests.support.api import client_for

pytestmark = pytest.mark.django_db

CAST = ("alice", "bob", "vera", "olga", "charlie", "root")


@dataclass
class Case:
    method: str
    url: str
    data: dict | None = None
    seen: list = field(default_factory=list)  # objects the caller must see (in the URL or named in the body)
    hidden_status: int = 404
    needs: list = field(default_factory=list)  # (action, obj) pairs the services ask, in order
    ok_status: int = 200

    def expected(self, user) -> int:
        if not all(may(user, VIEW, obj) for obj in self.seen):
            return self.hidden_status
        if not all(may(user, action, obj) for action, obj in self.needs):
            return 403
        return self.ok_status


@pytest.fixture
def cast(alice, bob, vera, olga, charlie, root):
    return {"alice": alice, "bob": bob, "vera": vera, "olga": olga, "charlie": charlie, "root": root}


@pytest.fixture
def things(cast, acme, alpha, omega):
    bobs_key = VirtualKeyFactory(team=alpha, user=cast["bob"])
    blocked_key = VirtualKeyFactory(team=alpha, user=cast["bob"], blocked=True)
    token = ApiToken.objects.create(user=cast["bob"], name="bob's", token_hash="hash-bob", prefix="gw-bob")
    return {
        "acme": acme,
        "alpha": alpha,
        "omega": omega,
        "bob": cast["bob"],
        "bobs_membership": Membership.objects.get(user=cast["bob"], team=alpha),
        "veras_membership": Membership.objects.get(user=cast["vera"], team=alpha),
        "bobs_key": bobs_key,
        "blocked_key": blocked_key,
        "token": token,
        "customer": CustomerFactory(organization=acme),
        "acme_deployment": DeploymentFactory(organization=acme, model_name="acme-private"),
        "shared_deployment": DeploymentFactory(organization=None),
    }


def api_cases(t) -> dict[str, Case]:
    acme, alpha = t["acme"], t["alpha"]
    prospective_key = VirtualKey(team=alpha, organization_id=alpha.organization_id, user=t["bob"])
    return {
        "rename the organization": Case(
            "patch", f"/api/v1/organizations/{acme.pk}/", {"name": "Acme 2"}, [acme], needs=[(CHANGE, acme)]
        ),
        "raise the organization's budget": Case(
            "patch",
            f"/api/v1/organizations/{acme.pk}/",
            {"max_budget": "5.00"},
            [acme],
            needs=[(CHANGE, acme), ("organization.set_ceiling", acme)],
        ),
        "rename the team": Case(
            "patch", f"/api/v1/teams/{alpha.pk}/", {"name": "Alpha 2"}, [alpha], needs=[(CHANGE, alpha)]
        ),
        "raise the team's limit": Case(
            "patch", f"/api/v1/teams/{alpha.pk}/", {"rpm_limit": 5}, [alpha], needs=[("team.set_ceiling", alpha)]
        ),
        "create a team": Case(
            "post",
            "/api/v1/teams/",
            {"organization": acme.pk, "name": "Gamma"},
            [acme],
            hidden_status=400,
            needs=[("team.create", acme)],
            ok_status=201,
        ),
        "demote bob to viewer": Case(
            "patch",
            f"/api/v1/members/{t['bobs_membership'].pk}/",
            {"role": "viewer"},
            [t["bobs_membership"]],
            needs=[("membership.change", t["bobs_membership"])],
        ),
        "remove vera from the team": Case(
            "delete",
            f"/api/v1/members/{t['veras_membership'].pk}/",
            seen=[t["veras_membership"]],
            needs=[("membership.change", t["veras_membership"])],
            ok_status=204,
        ),
        "rename bob's key": Case(
            "patch",
            f"/api/v1/keys/{t['bobs_key'].pk}/",
            {"alias": "renamed"},
            [t["bobs_key"]],
            needs=[(CHANGE, t["bobs_key"])],
        ),
        "unblock bob's blocked key": Case(
            "post",
            f"/api/v1/keys/{t['blocked_key'].pk}/unblock/",
            seen=[t["blocked_key"]],
            needs=[(CHANGE, t["blocked_key"]), ("key.loosen", t["blocked_key"])],
        ),
        "revoke bob's key": Case(
            "post", f"/api/v1/keys/{t['bobs_key'].pk}/revoke/", seen=[t["bobs_key"]], needs=[(CHANGE, t["bobs_key"])]
        ),
        "create a key for bob in alpha": Case(
            "post",
            "/api/v1/keys/",
            {"team": alpha.pk, "user": t["bob"].pk},
            [alpha, t["bob"]],
            hidden_status=400,
            needs=[("key.create", prospective_key), ("key.create_while_blocked", prospective_key)],
            ok_status=201,
        ),
        "rename bob": Case(
            "patch",
            f"/api/v1/users/{t['bob'].pk}/",
            {"first_name": "Robert"},
            [t["bob"]],
            needs=[("user.update", t["bob"])],
        ),
        "offboard bob from acme": Case(
            "post",
            f"/api/v1/users/{t['bob'].pk}/offboard/",
            {"organization": acme.pk},
            [t["bob"], acme],
            needs=[("user.offboard", acme)],
        ),
        "delete bob's api token": Case(
            "delete",
            f"/api/v1/tokens/{t['token'].pk}/",
            seen=[t["token"]],
            needs=[("api_token.delete", t["token"])],
            ok_status=204,
        ),
        "block an acme customer": Case(
            "patch",
            f"/api/v1/customers/{t['customer'].pk}/",
            {"blocked": True},
            [t["customer"]],
            needs=[("customer.upsert", acme)],
        ),
        "change acme's deployment": Case(
            "patch",
            f"/api/v1/deployments/{t['acme_deployment'].pk}/",
            {"rpm_limit": 7},
            [t["acme_deployment"]],
            needs=[(CHANGE, t["acme_deployment"])],
        ),
        "delete the shared deployment": Case(
            "delete",
            f"/api/v1/deployments/{t['shared_deployment'].pk}/",
            seen=[t["shared_deployment"]],
            needs=[(DELETE, t["shared_deployment"])],
            ok_status=204,
        ),
    }


API_CASE_NAMES = [
    "rename the organization",
    "raise the organization's budget",
    "rename the team",
    "raise the team's limit",
    "create a team",
    "demote bob to viewer",
    "remove vera from the team",
    "rename bob's key",
    "unblock bob's blocked key",
    "revoke bob's key",
    "create a key for bob in alpha",
    "rename bob",
    "offboard bob from acme",
    "delete bob's api token",
    "block an acme customer",
    "change acme's deployment",
    "delete the shared deployment",
]


def test_every_api_case_runs(things):
    assert sorted(api_cases(things)) == sorted(API_CASE_NAMES)


@pytest.mark.parametrize("who", CAST)
@pytest.mark.parametrize("case_name", API_CASE_NAMES)
def test_the_api_refuses_exactly_what_may_refuses(cast, things, who, case_name):
    case = api_cases(things)[case_name]
    user = cast[who]
    expected = case.expected(user)
    response = getattr(client_for(user), case.method)(case.url, case.data, format="json")
    assert response.status_code == expected, (who, case_name, response.content[:300])


def admin_page(user, url: str):
    client = Client()
    client.force_login(user)
    return client.get(url)


@pytest.mark.parametrize("who", CAST)
def test_admin_change_pages_offer_a_save_exactly_when_may_allows(cast, things, who):
    user = cast[who]
    pages = [
        ("teams/organization", things["acme"], CHANGE),
        ("teams/team", things["alpha"], CHANGE),
        ("teams/membership", things["bobs_membership"], "membership.change"),
        ("teams/user", things["bob"], "user.update"),
        ("teams/customer", things["customer"], CHANGE),
        ("keys/virtualkey", things["bobs_key"], CHANGE),
        ("proxy/modeldeployment", things["acme_deployment"], CHANGE),
        ("proxy/modeldeployment", things["shared_deployment"], CHANGE),
    ]
    for path, obj, action in pages:
        response = admin_page(user, f"/admin/{path}/{obj.pk}/change/")
        if not may(user, VIEW, obj):
            # "Doesn't exist" (back to the index), or 403 when none of the model's rows is theirs to see.
            hidden = 302 if reaches_any(obj.__class__, user, VIEW) else 403
            assert response.status_code == hidden, (who, path)
            continue
        assert response.status_code == 200, (who, path)
        assert ('name="_save"' in response.content.decode()) == may(user, action, obj), (who, path)


@pytest.mark.parametrize("who", CAST)
def test_admin_delete_pages_open_exactly_when_may_allows(cast, things, who):
    user = cast[who]
    pages = [
        ("teams/membership", things["veras_membership"], "membership.change"),
        ("keys/apitoken", things["token"], "api_token.delete"),
        ("proxy/modeldeployment", things["acme_deployment"], DELETE),
        ("proxy/modeldeployment", things["shared_deployment"], DELETE),
    ]
    for path, obj, action in pages:
        response = admin_page(user, f"/admin/{path}/{obj.pk}/delete/")
        if not may(user, VIEW, obj):
            hidden = 302 if reaches_any(obj.__class__, user, action) else 403
            assert response.status_code == hidden, (who, path)
        elif may(user, action, obj):
            assert response.status_code == 200, (who, path)
        else:
            assert response.status_code == 403, (who, path)


@pytest.mark.parametrize("who", CAST)
def test_an_admin_delete_removes_the_membership_exactly_when_may_allows(cast, things, who):
    user, membership = cast[who], things["veras_membership"]
    allowed = may(user, "membership.change", membership)
    client = Client()
    client.force_login(user)
    client.post(f"/admin/teams/membership/{membership.pk}/delete/", {"post": "yes"})
    assert Membership.objects.filter(pk=membership.pk).exists() is not allowed
