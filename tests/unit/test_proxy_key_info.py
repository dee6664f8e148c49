"""``GET /v1/key/info``: the key holder sees their own key, nothing else, with the proxy's 401."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from tests.factories import VirtualKeyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_key(alpha, bob):
    alpha.rpm_limit = 100
    alpha.max_budget = Decimal("50")
    alpha.allowed_models = ["gpt-4o", "gpt-4o-mini"]
    alpha.save()
    return VirtualKeyFactory(
        team=alpha,
        user=bob,
        alias="bob-key",
        rpm_limit=500,
        max_budget=Decimal("10"),
        allowed_models=["gpt-4o-mini", "claude"],
    )


def test_key_info_with_bearer(client, bob_key):
    response = client.get("/v1/key/info", headers={"Authorization": f"Bearer {bob_key.secret}"})
    assert response.status_code == 200
    data = response.json()
    assert data["alias"] == "bob-key" and data["team"] == "Alpha" and data["organization"] == "Acme"
    assert data["models"] == ["gpt-4o-mini"]  # the key's list within the team's
    assert data["limits"]["rpm_limit"] == 500
    assert data["effective_limits"]["rpm_limit"] == 100  # the team's is tighter
    assert Decimal(data["effective_limits"]["max_budget"]) == Decimal("10")
    assert bob_key.secret not in response.content.decode()
    assert "key_hash" not in data


def test_key_info_with_x_api_key(client, bob_key):
    assert client.get("/v1/key/info", headers={"x-api-key": bob_key.secret}).status_code == 200


def test_unknown_revoked_and_expired_keys_get_401(client, alpha, bob_key):
    revoked = VirtualKeyFactory(team=alpha, revoked_at=timezone.now())
    expired = VirtualKeyFactory(team=alpha, expires_at=timezone.now() - timedelta(minutes=1))
    for secret in ("sk-gw-nope", revoked.secret, expired.secret):
        response = client.get("/v1/key/info", headers={"Authorization": f"Bearer {secret}"})
        assert response.status_code == 401
    assert client.get("/v1/key/info").status_code == 401
