"""``may(user, action, obj)`` answers exactly what ``restrict(user, action)`` shows, for the whole cast.

The cast (tests/conftest.py): alice administers team Alpha, bob is an Alpha member, vera an Alpha
viewer, olga an admin of the whole Acme organization, charlie the outsider (admin of Globex's Omega),
root a superuser. Every tenant model gets rows inside and outside each of their reaches; every action
that can be asked about that model (view, change, delete, use, and the named actions of ``ACTIONS``)
must give the same answer from ``may`` as from membership in ``restrict``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.apps import apps
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from apps.guardrails.models import GuardrailPolicy
from apps.keys.models import ApiToken, VirtualKey
from apps.mcp.models import McpGrant, McpServer
from apps.monitoring.models import AlertChannel, AlertEvent
from apps.proxy.models import ModelAlias, ModelDeployment, ModelGroup
from apps.sinks.models import LogSink
from apps.spend.models import BudgetAlert, BudgetWindow, DailySpend, MonthlySpend, Report, ReportRun, SpendLog
from apps.sso.models import GroupMapping, SsoIdentity
from apps.teams.models import AuditEvent, Membership, ModelAccessGroup, Team
from apps.teams.scoping import ACTIONS, CHANGE, DELETE, USE, VIEW, may, require, tenancy_for
from tests.factories import CustomerFactory, DeploymentFactory, MembershipFactory, UserFactory, VirtualKeyFactory

pytestmark = pytest.mark.django_db

CAST = ("alice", "bob", "vera", "olga", "charlie", "root")


@pytest.fixture
def cast(alice, bob, vera, olga, charlie, root):
    return {"alice": alice, "bob": bob, "vera": vera, "olga": olga, "charlie": charlie, "root": root}


@pytest.fixture
def world(cast, acme, alpha, globex, omega):
    """Rows of every tenant model, at every distance from each member of the cast."""
    beta = Team.objects.create(organization=acme, name="Beta")
    dana = UserFactory(username="dana")  # a member of Beta only: alice and bob have no say over her
    MembershipFactory(user=dana, team=beta, organization=acme, role="member")
    MembershipFactory(user=UserFactory(username="owen"), team=None, organization=acme, role="owner")
    now = timezone.now()
    keys = [
        VirtualKeyFactory(team=alpha, user=cast["alice"]),
        VirtualKeyFactory(team=alpha, user=cast["bob"]),
        VirtualKeyFactory(team=alpha, user=cast["vera"]),
        VirtualKeyFactory(team=alpha, user=None),
        VirtualKeyFactory(team=beta, user=dana),
        VirtualKeyFactory(team=omega, user=cast["charlie"]),
    ]
    for name in ("bob", "vera", "charlie", "olga"):
        ApiToken.objects.create(user=cast[name], name=f"{name}'s", token_hash=f"hash-{name}", prefix=f"gw-{name}")
    CustomerFactory(organization=acme)
    CustomerFactory(organization=globex)
    DeploymentFactory(organization=None)
    DeploymentFactory(organization=acme, model_name="acme-private")
    DeploymentFactory(organization=globex, model_name="globex-private")
    ModelGroup.objects.create(model_name="gpt-4o-mini")
    ModelAlias.objects.create(alias="small", model_name="gpt-4o-mini")
    ModelAccessGroup.objects.create(name="shared-group", members=["gpt-4o-mini"])
    ModelAccessGroup.objects.create(name="acme-group", members=["*"], organization=acme)
    ModelAccessGroup.objects.create(name="globex-group", members=["*"], organization=globex)
    for org, team, key in ((acme, alpha, keys[1]), (globex, omega, keys[5])):
        server = McpServer.objects.create(organization=org, name="tools", url="https://mcp.example.com/mcp")
        McpGrant.objects.create(organization=org, server=server, team=team, all_tools=True)
        McpGrant.objects.create(organization=org, server=server, key=key, tools=["search"])
    places = [
        (acme, alpha, cast["bob"], keys[1]),
        (acme, beta, dana, keys[4]),
        (globex, omega, cast["charlie"], keys[5]),
    ]
    places.append((acme, None, None, None))
    for n, (org, team, user, key) in enumerate(places):
        common = {"organization": org, "team": team}
        AuditEvent.objects.create(action="test", object_type="test", **common)
        SpendLog.objects.create(request_id=f"req-{n}", created_at=now, status=200, user=user, key=key, **common)
        DailySpend.objects.create(bucket=f"b-{n}", day=now.date(), user=user, key=key, **common)
        MonthlySpend.objects.create(bucket=f"b-{n}", month=now.date().replace(day=1), user=user, key=key, **common)
        BudgetWindow.objects.create(
            scope="team", scope_id=str(n), window_id="all", window_start=now, window_end=now, updated_at=now, user=user,
            **common,
        )  # fmt: skip
        BudgetAlert.objects.create(
            scope="team", scope_id=str(n), window_id="all", kind="soft", threshold=1, spent=1, **common
        )
        AlertChannel.objects.create(name=f"channel {n}", kind="email", recipients="ops@example.test", **common)
        AlertEvent.objects.create(rule="limits.repeated", subject=f"team:{n}", window_id="w", title="t", **common)
        report = Report.objects.create(name=f"report {n}", **common)
        ReportRun.objects.create(report=report, period_start=now - timedelta(days=1), period_end=now, format="csv")
        GroupMapping.objects.create(value=f"group-{n}", **common)
        if user is not None:
            SsoIdentity.objects.create(user=user, issuer="https://idp.example", subject=f"sub-{n}")
        LogSink.objects.create(name=f"sink {n}", kind="http", url="https://hooks.example.com/", **common)
        GuardrailPolicy.objects.create(config={"max_input_chars": 10}, **common)  # the team's, or the organization's
        if key is not None:
            GuardrailPolicy.objects.create(config={"max_input_chars": 5}, key=key, **common)
    SpendLog.objects.create(request_id="req-orphan", created_at=now, status=401)  # no tenant at all
    AlertChannel.objects.create(name="the operator's", kind="email", recipients="ops@example.test")  # superusers
    return cast


def tenant_models():
    return [m for m in apps.get_models() if hasattr(m, "TENANT_PATHS")]


def actions_for(model) -> list[str]:
    label = model._meta.label_lower
    return [VIEW, CHANGE, DELETE, USE, *(name for name, action in ACTIONS.items() if label in action.on)]


def test_every_tenant_model_has_rows_in_the_world(world):
    empty = [m._meta.label for m in tenant_models() if not m._default_manager.exists()]
    assert empty == []


@pytest.mark.parametrize("who", CAST)
def test_may_is_membership_in_restrict_for_every_model_and_action(world, who):
    user = world[who]
    for model in tenant_models():
        for action in actions_for(model):
            shown = set(model._default_manager.restrict(user, action).values_list("pk", flat=True))
            # Fresh rows, nothing prefetched: may() reads foreign key ids, or asks the database (a user's memberships).
            answered = {obj.pk for obj in model._default_manager.all() if may(user, action, obj)}
            assert answered == shown, f"{who} {action} {model._meta.label}"


@pytest.mark.parametrize("who", CAST)
def test_may_reads_foreign_keys_without_a_query(world, who, django_assert_num_queries):
    user = world[who]
    tenancy_for(user)  # memberships are read once per request, not per object
    direct = [m for m in tenant_models() if m._meta.label_lower not in ("teams.user", "spend.reportrun")]
    rows = {model: list(model._default_manager.all()) for model in direct}
    with django_assert_num_queries(0):
        for model, objects in rows.items():
            for action in actions_for(model):
                for obj in objects:
                    may(user, action, obj)


def test_an_unsaved_object_is_judged_by_the_rows_it_would_have(world, alpha, omega):
    bob, alice = world["bob"], world["alice"]
    assert may(bob, "key.create", VirtualKey(team=alpha, organization_id=alpha.organization_id, user=bob))
    assert not may(bob, "key.create", VirtualKey(team=alpha, organization_id=alpha.organization_id, user=alice))
    assert not may(bob, "key.create", VirtualKey(team=omega, organization_id=omega.organization_id, user=bob))
    assert may(alice, "key.create", VirtualKey(team=alpha, organization_id=alpha.organization_id, user=None))
    assert not may(world["olga"], "deployment.create", ModelDeployment(organization=None))
    assert may(world["olga"], "deployment.create", ModelDeployment(organization=alpha.organization))


@pytest.mark.parametrize("who", CAST)
def test_the_teams_offered_for_new_keys_are_where_a_key_of_ones_own_may_be_created(world, who):
    user = world[who]
    offered = set(Team.objects.restrict(user, "team.create_keys"))
    own_key_allowed = {
        team
        for team in Team.objects.all()
        if may(user, "key.create", VirtualKey(team=team, organization_id=team.organization_id, user=user))
    }
    assert offered == own_key_allowed


def test_actions_on_no_object(world):
    admins = {who for who in CAST if may(world[who], "user.create")}
    assert admins == {"alice", "olga", "charlie", "root"}
    for action in ("organization.create", "user.set_limits", "key.set_priority"):
        assert {who for who in CAST if may(world[who], action)} == {"root"}, action


def test_require_raises_the_services_refusal(world, alpha):
    with pytest.raises(PermissionDenied, match=r"You are not an admin of this organization\."):
        require(world["alice"], "team.create", alpha.organization)
    with pytest.raises(PermissionDenied, match="custom"):
        require(world["bob"], CHANGE, alpha, message="custom")
    require(world["olga"], "team.create", alpha.organization)


def test_an_action_asked_about_the_wrong_model_or_unknown_is_a_programming_error(world, alpha):
    with pytest.raises(ValueError, match=r"teams\.Team"):
        may(world["root"], "team.create", alpha)
    with pytest.raises(ValueError, match="unknown action"):
        may(world["root"], "team.explode", alpha)
    with pytest.raises(ValueError):
        Membership.objects.restrict(world["root"], "key.loosen")
