"""Who may offboard whom (``POST /api/v1/users/{id}/offboard/``), and what stays untouched.

The keys stopping on a live gateway is tests/integration/test_teams_offboarding.py; this is the permission side.
"""

import pytest

from apps.keys.models import VirtualKey
from apps.teams.models import Membership
from tests.factories import MembershipFactory, VirtualKeyFactory
from tests.support.api import client_for

pytestmark = pytest.mark.django_db


def offboard(actor, person, organization):
    return client_for(actor).post(
        f"/api/v1/users/{person.pk}/offboard/", {"organization": organization.pk}, format="json"
    )


def test_org_admin_offboards_a_member_from_every_team_and_org_role(acme, alpha, bob, olga, omega):
    MembershipFactory(user=bob, team=None, organization=acme, role="viewer")
    MembershipFactory(user=bob, team=omega, organization=omega.organization, role="member")
    acme_key = VirtualKeyFactory(team=alpha, user=bob)
    globex_key = VirtualKeyFactory(team=omega, user=bob)
    response = offboard(olga, bob, acme)
    assert response.status_code == 200, response.content
    assert response.json()["memberships_removed"] == 2 and response.json()["keys_suspended"] == 1
    assert not Membership.objects.filter(user=bob, organization=acme).exists()
    assert Membership.objects.filter(user=bob, team=omega).exists()  # another organization's business
    assert VirtualKey.objects.get(pk=acme_key.pk).blocked
    assert not VirtualKey.objects.get(pk=globex_key.pk).blocked


def test_team_admin_cannot_offboard_from_the_whole_organization(acme, alpha, alice, bob):
    key = VirtualKeyFactory(team=alpha, user=bob)
    assert offboard(alice, bob, acme).status_code == 403
    assert Membership.objects.filter(user=bob, team=alpha).exists()
    assert not VirtualKey.objects.get(pk=key.pk).blocked


def test_outsider_sees_no_one_to_offboard(acme, bob, charlie):
    assert offboard(charlie, bob, acme).status_code == 404
    assert Membership.objects.filter(user=bob).exists()


def test_no_one_offboards_themselves(acme, olga):
    response = offboard(olga, olga, acme)
    assert response.status_code == 400 and "user" in response.json()


def test_offboard_needs_a_visible_organization(acme, globex, bob, olga):
    assert offboard(olga, bob, globex).status_code == 400
    response = client_for(olga).post(f"/api/v1/users/{bob.pk}/offboard/", {}, format="json")
    assert response.status_code == 400 and "organization" in response.json()


def test_team_admin_removing_a_member_blocks_only_that_teams_keys(acme, alpha, alice, bob):
    from tests.factories import TeamFactory

    beta = TeamFactory(organization=acme, name="Beta")
    MembershipFactory(user=bob, team=beta, organization=acme, role="member")
    alpha_key, beta_key = VirtualKeyFactory(team=alpha, user=bob), VirtualKeyFactory(team=beta, user=bob)
    membership = Membership.objects.get(user=bob, team=alpha)
    assert client_for(alice).delete(f"/api/v1/members/{membership.pk}/").status_code == 204
    assert VirtualKey.objects.get(pk=alpha_key.pk).blocked
    assert not VirtualKey.objects.get(pk=beta_key.pk).blocked
