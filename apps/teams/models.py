"""Tenants: organizations, teams, people in them, and the end users (customers) their apps serve."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models

from apps.teams.limits import LimitFields
from apps.teams.scoping import TenantPaths, TenantQuerySet


class GatewayUserManager(UserManager.from_queryset(TenantQuerySet)):
    pass


class User(AbstractUser, LimitFields):
    """A person: logs in to the admin, owns keys. Carries user-level limits and budget."""

    TENANT_PATHS = TenantPaths(organization="memberships__organization", team="memberships__team", owner="")

    objects = GatewayUserManager()

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"


class Organization(LimitFields):
    TENANT_PATHS = TenantPaths(organization="")

    name = models.CharField(max_length=200, unique=True)
    time_zone = models.CharField(max_length=64, default="UTC", help_text="Budget windows align to this zone.")
    allowed_models = models.JSONField(default=list, blank=True, help_text="Empty: every model.")
    blocked = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Team(LimitFields):
    TENANT_PATHS = TenantPaths(organization="organization", team="")

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="teams")
    name = models.CharField(max_length=200)
    allowed_models = models.JSONField(default=list, blank=True, help_text="Empty: every model the org allows.")
    # Per-model limits for the whole team: {"gpt-4o": {"rpm_limit": 100, "tpm_limit": 100000}}.
    model_limits = models.JSONField(default=dict, blank=True)
    session_max_budget = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    session_max_iterations = models.PositiveIntegerField(null=True, blank=True)
    budget_clamp_max_tokens = models.BooleanField(
        default=False,
        help_text="For every key of the team: when a budget cannot pay for the whole max_tokens, lower "
        "max_tokens to what it can pay for instead of refusing the request.",
    )
    trace_content = models.BooleanField(
        default=False,
        help_text="Record prompt and completion text in this team's OpenTelemetry traces (off: only counts, "
        "models and ids are recorded). Turn on only where the trace backend may hold that text.",
    )
    cache_ttl_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Response cache for the team's keys: identical chat, completion and embedding requests are "
        "answered from the cache for this many seconds (a key's own setting wins). Empty or 0: off.",
    )
    blocked = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["organization__name", "name"]
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="team_unique_name_per_org")]

    def __str__(self) -> str:
        return f"{self.organization.name} / {self.name}"


class ModelAccessGroup(models.Model):
    """A name for a set of models ("gpt-4-family"), usable wherever a key, team or organization lists models.

    ``members`` are model names or fnmatch patterns ("claude-*", "openai/*"; apps/teams/access.py says
    what they match). ``organization`` empty: shared by every tenant (superusers manage it); an
    organization's own group of the same name shadows a shared one for its keys. Resolved into each key's
    immutable context when it is built, never per request.
    """

    TENANT_PATHS = TenantPaths(organization="organization", shared=True)

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, null=True, blank=True, related_name="access_groups"
    )
    name = models.CharField(max_length=200, help_text="What keys, teams and organizations list instead of models.")
    members = models.JSONField(default=list, blank=True, help_text="Model names or patterns such as claude-*.")
    description = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "name"], name="access_group_unique_per_org"),
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(organization__isnull=True), name="access_group_unique_shared"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class Membership(models.Model):
    """A user's role in a team, or in a whole organization when ``team`` is empty."""

    TENANT_PATHS = TenantPaths(organization="organization", team="team", owner="user")

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, null=True, blank=True, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization", "team"], name="membership_unique"),
            models.UniqueConstraint(
                fields=["user", "organization"],
                condition=models.Q(team__isnull=True),
                name="membership_unique_org_level",
            ),
        ]

    def __str__(self) -> str:
        where = self.team.name if self.team_id else self.organization.name
        return f"{self.user} ({self.role} of {where})"


class Customer(LimitFields):
    """An end user of a tenant's app, identified by the ``user`` field the client sends."""

    TENANT_PATHS = TenantPaths(organization="organization")

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="customers")
    external_id = models.CharField(max_length=255)
    blocked = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "external_id"], name="customer_unique_per_org")]

    def __str__(self) -> str:
        return self.external_id


class AuditEvent(models.Model):
    """Who changed what, when and from where; written by services, shown to the tenant's admins."""

    TENANT_PATHS = TenantPaths(organization="organization", team="team")

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    actor_label = models.CharField(max_length=200, blank=True, help_text="e.g. 'master key' or a username.")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, null=True, blank=True)
    team = models.ForeignKey(Team, on_delete=models.SET_NULL, null=True, blank=True)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=255, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=16, default="api", help_text="admin, api or system.")
    ip_address = models.GenericIPAddressField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.object_type} {self.object_repr}"
