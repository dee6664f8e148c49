"""Single sign-on's groups become memberships through the teams services (audited), and only its own.

The cast: Acme with teams Alpha and Beta. alice signs in through the provider; bob is Acme's owner;
trent is Alpha's admin; charlie runs Globex. Claims are what a verified ID token carried (the browser
tests in tests/e2e/test_sso_browser_login.py take them from a real provider).
"""

from __future__ import annotations

import io
import threading
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.db import connection

from apps.sso.claims import Claims
from apps.sso.models import GroupMapping, SsoGrant, SsoIdentity
from apps.sso.services import (
    SsoRefused,
    group_mapping_create,
    group_mapping_delete,
    group_mapping_update,
    sso_resync_all,
    sso_sign_in,
    sso_token_user,
)
from apps.sso.tasks import sso_resync
from apps.teams.audit import Actor
from apps.teams.models import AuditEvent, Membership
from tests.factories import MembershipFactory, OrganizationFactory, TeamFactory, UserFactory, VirtualKeyFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

ISSUER = "https://idp.example"


def _claims(groups: list[str], *, sub: str = "alice-sub", email: str = "alice@acme.test", verified: bool = True):
    return Claims(issuer=ISSUER, subject=sub, email=email, email_verified=verified, groups=tuple(groups))


def _sign_in(groups: list[str], **kwargs):
    return sso_sign_in(claims=_claims(groups, **kwargs), allowed_domains=["acme.test"])


@pytest.fixture
def world():
    acme = OrganizationFactory(name="Acme")
    alpha = TeamFactory(organization=acme, name="Alpha")
    beta = TeamFactory(organization=acme, name="Beta")
    globex = OrganizationFactory(name="Globex")
    omega = TeamFactory(organization=globex, name="Omega")
    bob = UserFactory(username="bob")
    MembershipFactory(user=bob, organization=acme, team=None, role="owner")
    trent = UserFactory(username="trent")
    MembershipFactory(user=trent, organization=acme, team=alpha, role="admin")
    charlie = UserFactory(username="charlie")
    MembershipFactory(user=charlie, organization=globex, team=None, role="owner")
    GroupMapping.objects.create(value="alpha-devs", organization=acme, team=alpha, role="member")
    GroupMapping.objects.create(value="alpha-leads", organization=acme, team=alpha, role="admin")
    GroupMapping.objects.create(value="acme-all", organization=acme, role="viewer")
    return {"acme": acme, "alpha": alpha, "beta": beta, "globex": globex, "omega": omega, "bob": bob,
            "trent": trent, "charlie": charlie}  # fmt: skip


def _places(user) -> set[tuple[str | None, str]]:
    return {(m.team.name if m.team else None, m.role) for m in Membership.objects.filter(user=user)}


def test_the_strongest_role_of_several_matching_rules_wins(world):
    alice = _sign_in(["alpha-devs", "alpha-leads", "acme-all", "not-mapped"])
    assert _places(alice) == {("Alpha", "admin"), (None, "viewer")}
    assert alice.is_staff and not alice.has_usable_password()


def test_a_group_change_updates_and_removes_exactly_the_granted_memberships(world):
    alice = _sign_in(["alpha-leads", "acme-all"])
    _sign_in(["alpha-devs"])
    assert _places(alice) == {("Alpha", "member")}
    actions = list(AuditEvent.objects.filter(source="sso").values_list("action", flat=True))
    assert actions.count("membership.update") == 1 and actions.count("membership.delete") == 1
    change = AuditEvent.objects.filter(action="sso.groups_change").first()
    assert change.changes["groups"] == [["acme-all", "alpha-leads"], ["alpha-devs"]]


def test_removal_from_a_team_blocks_the_persons_keys_there(world):
    alice = _sign_in(["alpha-devs"])
    key = VirtualKeyFactory(team=world["alpha"], user=alice)
    _sign_in(["acme-all"])
    key.refresh_from_db()
    assert key.blocked
    assert _places(alice) == {(None, "viewer")}


def test_a_membership_an_admin_made_by_hand_is_never_touched(world):
    alice = _sign_in(["acme-all"])
    by_hand = MembershipFactory(user=alice, organization=world["acme"], team=world["beta"], role="admin")
    GroupMapping.objects.create(value="beta-devs", organization=world["acme"], team=world["beta"], role="member")
    _sign_in(["acme-all", "beta-devs"])
    by_hand.refresh_from_db()
    assert by_hand.role == "admin" and not SsoGrant.objects.filter(membership=by_hand).exists()
    _sign_in(["acme-all"])
    assert Membership.objects.filter(pk=by_hand.pk).exists()


def test_out_of_every_group_the_sign_in_is_refused_after_the_memberships_go(world):
    alice = _sign_in(["alpha-devs"])
    with pytest.raises(SsoRefused, match="None of your groups"):
        _sign_in([])
    assert _places(alice) == set()


def test_domains_verification_and_existing_accounts(world):
    with pytest.raises(SsoRefused, match="domain"):
        _sign_in(["alpha-devs"], email="mallory@evil.test")
    with pytest.raises(SsoRefused, match="not verified"):
        _sign_in(["alpha-devs"], verified=False)
    # An existing account is adopted by its verified address; a superuser's never (break-glass stays local).
    existing = UserFactory(username="carol@acme.test", email="carol@acme.test")
    assert _sign_in(["alpha-devs"], sub="carol-sub", email="carol@acme.test") == existing
    UserFactory(username="root@acme.test", email="root@acme.test", is_superuser=True)
    with pytest.raises(SsoRefused, match="already exists"):
        _sign_in(["alpha-devs"], sub="root-sub", email="root@acme.test")
    assert not SsoIdentity.objects.filter(subject="root-sub").exists()


def test_a_deactivated_person_is_refused(world):
    alice = _sign_in(["alpha-devs"])
    alice.is_active = False
    alice.save()
    with pytest.raises(SsoRefused, match="deactivated"):
        _sign_in(["alpha-devs"])


def test_the_periodic_sync_applies_a_removed_rule_without_a_sign_in(world):
    alice = _sign_in(["alpha-devs", "acme-all"])
    bob = Actor(user=world["bob"], source="admin")
    group_mapping_delete(actor=bob, mapping=GroupMapping.objects.get(value="alpha-devs"))
    result = sso_resync_all()
    assert (result.removed, result.created) == (1, 0)
    assert _places(alice) == {(None, "viewer")}


def test_organization_owners_edit_their_own_rules_only(world):
    bob, trent, charlie = (Actor(user=world[name], source="admin") for name in ("bob", "trent", "charlie"))
    rule = group_mapping_create(actor=bob, value="beta-devs", organization=world["acme"], team=world["beta"])
    assert AuditEvent.objects.filter(action="sso_mapping.create", actor=world["bob"]).exists()
    with pytest.raises(PermissionDenied):
        group_mapping_create(actor=trent, value="alpha-x", organization=world["acme"], team=world["alpha"])
    with pytest.raises(PermissionDenied):
        group_mapping_update(actor=charlie, mapping=rule, role="admin")
    with pytest.raises(PermissionDenied):  # no moving one's rule into another organization
        group_mapping_update(actor=bob, mapping=rule, organization=world["globex"], team=world["omega"])
    with pytest.raises(ValidationError):
        group_mapping_create(actor=bob, value="x", organization=world["acme"], team=world["omega"])
    with pytest.raises(PermissionDenied):
        group_mapping_create(actor=charlie, value="grab", organization=world["acme"])
    updated = group_mapping_update(actor=bob, mapping=GroupMapping.objects.get(pk=rule.pk), role="admin")
    assert updated.role == "admin"
    assert AuditEvent.objects.get(action="sso_mapping.update").changes == {"role": ["member", "admin"]}


def test_the_sync_command_and_task_report_what_they_changed(world):
    alice = _sign_in(["alpha-devs"])
    GroupMapping.objects.filter(value="alpha-devs").update(role="admin")
    out = io.StringIO()
    call_command("sso_sync", stdout=out)
    assert "created 0, updated 1, removed 0" in out.getvalue()
    assert _places(alice) == {("Alpha", "admin")}
    assert sso_resync.apply().get() == {"created": 0, "updated": 0, "removed": 0}


@pytest.mark.django_db(transaction=True)
def test_parallel_first_calls_of_one_service_account_make_one_user(world):
    """Parallel CI jobs with a fresh token: each call finds or creates the account; none fails."""
    claims = Claims(issuer=ISSUER, subject="ci-deployer", client_id="ci-deployer", groups=("alpha-devs",))
    barrier = threading.Barrier(4)
    users, errors = [], []

    def call() -> None:
        try:
            barrier.wait(timeout=30)
            users.append(sso_token_user(claims=claims, resync_after=timedelta(0)))
        except Exception as exc:  # collected: the assertion below names it
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == [] and len(users) == 4
    assert len({user.pk for user in users}) == 1
    assert SsoIdentity.objects.filter(subject="ci-deployer").count() == 1
    assert _places(users[0]) == {("Alpha", "member")}
