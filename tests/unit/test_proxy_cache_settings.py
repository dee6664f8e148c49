"""Where the response cache is switched on: a team's or a key's ``cache_ttl_seconds`` in the REST API, the
admin and the config file, and the TTL the proxy's key context carries (a key's own value wins; 0 is off)."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.test import Client

from apps.proxy.auth import load_key_context
from apps.teams.models import Team
from tests.factories import VirtualKeyFactory
from tests.support.api import client_for

pytestmark = pytest.mark.django_db


def test_a_team_ttl_is_inherited_and_a_key_overrides_it(alpha, alice, bob):
    key = VirtualKeyFactory(team=alpha, user=bob)
    assert load_key_context(key.key_hash).cache_ttl == 0  # off unless opted in
    response = client_for(alice).patch(f"/api/v1/teams/{alpha.pk}/", {"cache_ttl_seconds": 600}, format="json")
    assert response.status_code == 200 and response.json()["cache_ttl_seconds"] == 600
    assert load_key_context(key.key_hash).cache_ttl == 600

    response = client_for(alice).patch(f"/api/v1/keys/{key.pk}/", {"cache_ttl_seconds": 0}, format="json")
    assert response.status_code == 200 and response.json()["cache_ttl_seconds"] == 0
    assert load_key_context(key.key_hash).cache_ttl == 0  # the key opted out
    client_for(alice).patch(f"/api/v1/keys/{key.pk}/", {"cache_ttl_seconds": 30}, format="json")
    assert load_key_context(key.key_hash).cache_ttl == 30
    client_for(alice).patch(f"/api/v1/keys/{key.pk}/", {"cache_ttl_seconds": None}, format="json")
    assert load_key_context(key.key_hash).cache_ttl == 600  # back to the team's


@pytest.mark.parametrize("value", [-1, "soon", 10**9])
def test_a_bad_ttl_is_a_400_naming_the_field(alpha, alice, value):
    response = client_for(alice).patch(f"/api/v1/teams/{alpha.pk}/", {"cache_ttl_seconds": value}, format="json")
    assert response.status_code == 400 and "cache_ttl_seconds" in response.json()


def test_the_key_admin_edits_the_ttl(alpha, alice):
    key = VirtualKeyFactory(team=alpha, user=alice, alias="alice-key")
    client = Client()
    client.force_login(alice)
    page = client.get(f"/admin/keys/virtualkey/{key.pk}/change/").content.decode()
    assert 'name="cache_ttl_seconds"' in page and "Response cache" in page


CONFIG = """\
version: 1
organizations:
  - name: Initech
    teams:
      - name: search
        cache_ttl_seconds: 120
      - name: billing
"""


def test_the_config_file_sets_and_exports_the_team_ttl(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(CONFIG)
    call_command("gateway_apply", str(path), stdout=io.StringIO())
    assert Team.objects.get(name="search").cache_ttl_seconds == 120
    assert Team.objects.get(name="billing").cache_ttl_seconds is None
    out = io.StringIO()
    call_command("gateway_export", stdout=out, stderr=io.StringIO())
    exported = out.getvalue()
    assert "cache_ttl_seconds: 120" in exported and exported.count("cache_ttl_seconds") == 1
    path.write_text(exported)
    again = io.StringIO()
    call_command("gateway_apply", str(path), stdout=again)
    assert again.getvalue().strip() == "no changes"
