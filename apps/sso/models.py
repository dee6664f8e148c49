"""Single sign-on: who the identity provider says a person is, and how its groups become memberships.

A ``GroupMapping`` rule turns a value of the groups claim (or, for a service account calling the REST
API, its client id) into a role in an organization or a team. An ``SsoIdentity`` links the provider's
``(iss, sub)`` to a gateway user. An ``SsoGrant`` marks a membership that single sign-on created, so
the next login removes exactly those whose group is gone and never touches memberships an admin made.
"""

from __future__ import annotations

from django.db import models

from apps.teams.models import Membership, Organization, Role, Team, User
from apps.teams.scoping import TenantPaths, TenantQuerySet


class MatchKind(models.TextChoices):
    GROUP = "group", "Group (a value of the groups claim)"
    CLIENT = "client", "Client (a service account's client id, REST API tokens only)"


class GroupMapping(models.Model):
    """One rule: people in ``group`` get ``role`` in ``organization`` (or in ``team`` when set)."""

    TENANT_PATHS = TenantPaths(organization="organization", team="team")

    kind = models.CharField(max_length=10, choices=MatchKind.choices, default=MatchKind.GROUP)
    value = models.CharField(
        max_length=255, help_text="The group name (or client id) exactly as the provider sends it."
    )
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="sso_mappings")
    team = models.ForeignKey(
        Team,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="sso_mappings",
        help_text="Empty: a role in the whole organization.",
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["organization__name", "value"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "value", "organization", "team"], name="sso_mapping_unique"),
            models.UniqueConstraint(
                fields=["kind", "value", "organization"],
                condition=models.Q(team__isnull=True),
                name="sso_mapping_unique_org_level",
            ),
        ]

    def __str__(self) -> str:
        where = f"{self.organization.name} / {self.team.name}" if self.team_id else self.organization.name
        return f"{self.kind} {self.value} -> {self.role} of {where}"


class SsoIdentity(models.Model):
    """The provider's subject for a gateway user; the groups it carried at its last login."""

    TENANT_PATHS = TenantPaths(owner="user")

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="sso_identity")
    issuer = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    groups = models.JSONField(default=list, blank=True)
    client_id = models.CharField(max_length=255, blank=True, help_text="Service accounts: the token's azp/client_id.")
    last_login_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="sso_identity_unique_subject")]

    def __str__(self) -> str:
        return f"{self.user} ({self.subject})"


class SsoGrant(models.Model):
    """A membership single sign-on made (and so may remove or change); admins' own memberships have none."""

    membership = models.OneToOneField(Membership, on_delete=models.CASCADE, related_name="sso_grant")
    identity = models.ForeignKey(SsoIdentity, on_delete=models.CASCADE, related_name="grants")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"single sign-on grant of membership {self.membership_id}"
