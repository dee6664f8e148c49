"""What the gateway reads from a provider's token, and who may still use a password."""

from __future__ import annotations

import pytest
from django.test import override_settings

from apps.sso.backends import password_login_allowed
from apps.sso.claims import claims_read, email_domain_allowed, groups_from


def test_groups_come_from_a_list_a_string_or_a_nested_claim():
    assert groups_from(["b", "a", "a", " "]) == ("a", "b")
    assert groups_from("ops, dev  qa") == ("dev", "ops", "qa")
    assert groups_from({"not": "groups"}) == () and groups_from(None) == ()
    raw = {"sub": "1", "iss": "i", "realm_access": {"roles": ["gw-admins"]}}
    assert claims_read(raw, groups_claim="realm_access.roles").groups == ("gw-admins",)
    # Auth0-style namespaced claim names contain dots themselves.
    raw = {"sub": "1", "https://acme.test/groups": ["x"]}
    assert claims_read(raw, groups_claim="https://acme.test/groups").groups == ("x",)


def test_claims_normalise_email_and_verification_and_find_the_client():
    claims = claims_read(
        {"iss": "i", "sub": "s", "email": " Alice@ACME.test ", "email_verified": "true", "azp": "ci"},
        groups_claim="groups",
    )
    assert (claims.email, claims.email_verified, claims.client_id) == ("alice@acme.test", True, "ci")
    assert claims_read({"sub": "s", "client_id": "ci2"}, groups_claim="groups").client_id == "ci2"
    assert not claims_read({"sub": "s", "email_verified": "yes please"}, groups_claim="groups").email_verified


def test_email_domains_match_exactly():
    assert email_domain_allowed("a@acme.test", [])
    assert email_domain_allowed("a@acme.test", ["ACME.test"])
    assert not email_domain_allowed("a@evil-acme.test", ["acme.test"])
    assert not email_domain_allowed("a@acme.test.evil", ["acme.test"])
    assert not email_domain_allowed("no-at-sign", ["acme.test"])


class _User:
    def __init__(self, name: str, superuser: bool):
        self.name, self.is_superuser = name, superuser

    def get_username(self) -> str:
        return self.name


@pytest.mark.parametrize(
    ("password_login", "user", "allowed"),
    [
        (True, _User("tess", False), True),
        (False, _User("tess", False), False),
        (False, _User("root", True), True),
        (False, _User("other-root", True), False),  # a superuser not named break-glass
        (False, _User("root", False), False),  # named, but no longer a superuser
    ],
)
def test_password_login_off_leaves_only_the_break_glass_superusers(password_login, user, allowed):
    with override_settings(ADMIN_PASSWORD_LOGIN=password_login, ADMIN_BREAK_GLASS_USERS=["root"]):
        assert password_login_allowed(user) is allowed
