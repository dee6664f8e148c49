"""A team's opt-in to prompt and completion text in its traces: off by default, set by the team's admin,
refused to a member, and what the proxy's key context carries (the span builder reads it there)."""

import pytest

from apps.proxy.auth import load_key_context
from apps.teams.models import AuditEvent
from tests.factories import VirtualKeyFactory
from tests.support.api import client_for

pytestmark = pytest.mark.django_db


def test_a_team_admin_opts_the_team_in_and_its_keys_carry_it(alpha, alice, bob):
    key = VirtualKeyFactory(team=alpha, user=bob)
    assert load_key_context(key.key_hash).trace_content is False
    assert client_for(alice).get(f"/api/v1/teams/{alpha.pk}/").json()["trace_content"] is False

    denied = client_for(bob).patch(f"/api/v1/teams/{alpha.pk}/", {"trace_content": True}, format="json")
    assert denied.status_code == 403
    response = client_for(alice).patch(f"/api/v1/teams/{alpha.pk}/", {"trace_content": True}, format="json")
    assert response.status_code == 200 and response.json()["trace_content"] is True

    assert load_key_context(key.key_hash).trace_content is True
    assert AuditEvent.objects.filter(action="team.update", changes__trace_content=True).exists()


def test_a_non_boolean_is_a_400(alpha, alice):
    response = client_for(alice).patch(f"/api/v1/teams/{alpha.pk}/", {"trace_content": "maybe"}, format="json")
    assert response.status_code == 400
    assert "trace_content" in response.json()
