"""The tenant choke point: who sees and changes what."""

import pytest

from apps.keys.models import VirtualKey
from apps.teams.models import Team
from apps.teams.scoping import CHANGE
from tests.factories import VirtualKeyFactory

pytestmark = pytest.mark.django_db


def test_charlie_cannot_see_alphas_team_or_keys(alpha, alice, charlie):
    VirtualKeyFactory(team=alpha, user=alice)
    assert list(Team.objects.restrict(charlie)) == [charlie.memberships.get().team]
    assert not VirtualKey.objects.restrict(charlie).filter(team=alpha).exists()


def test_bob_sees_only_his_own_keys_in_alpha(alpha, alice, bob):
    alices = VirtualKeyFactory(team=alpha, user=alice)
    bobs = VirtualKeyFactory(team=alpha, user=bob)
    assert list(VirtualKey.objects.restrict(bob)) == [bobs]
    assert set(VirtualKey.objects.restrict(alice)) == {alices, bobs}


def test_vera_the_viewer_changes_nothing(alpha, vera):
    own = VirtualKeyFactory(team=alpha, user=vera)
    assert list(VirtualKey.objects.restrict(vera)) == [own]
    assert not VirtualKey.objects.restrict(vera, CHANGE).exists()


def test_olga_the_org_admin_sees_every_acme_team(acme, alpha, olga, omega):
    other_acme_team = Team.objects.create(organization=acme, name="Beta")
    assert set(Team.objects.restrict(olga, CHANGE)) == {alpha, other_acme_team}


def test_root_sees_everything(alpha, omega, root):
    assert set(Team.objects.restrict(root)) == {alpha, omega}


def test_shared_deployments_are_visible_to_tenants_but_only_superusers_change_them(alpha, alice, charlie, root):
    from apps.proxy.models import ModelDeployment
    from tests.factories import DeploymentFactory

    shared = DeploymentFactory(organization=None)
    acme_only = DeploymentFactory(organization=alpha.organization, model_name="acme-private")
    assert set(ModelDeployment.objects.restrict(alice)) == {shared, acme_only}
    assert set(ModelDeployment.objects.restrict(charlie)) == {shared}
    assert not ModelDeployment.objects.restrict(alice, CHANGE).filter(pk=shared.pk).exists()
    assert ModelDeployment.objects.restrict(root, CHANGE).filter(pk=shared.pk).exists()
