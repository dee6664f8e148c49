"""Virtual keys (what apps send on /v1) and API tokens (what admins send on /api/v1)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.teams.limits import LimitFields
from apps.teams.models import Organization, Team
from apps.teams.scoping import TenantPaths, TenantQuerySet


class VirtualKey(LimitFields):
    TENANT_PATHS = TenantPaths(organization="organization", team="team", owner="user")

    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    # A key imported from LiteLLM, whose secret the gateway never saw: LiteLLM's verifier, the SHA-256 hex
    # digest of the secret. The first request with that secret moves the key to key_hash and clears this.
    legacy_sha256 = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)
    # Which LiteLLM key this row was imported as, kept after the first use clears legacy_sha256, so running
    # the import again finds it: a keyed hash of LiteLLM's token id (never a verifier of the secret).
    import_ref = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)
    prefix = models.CharField(max_length=32, editable=False, help_text="Shown instead of the secret.")
    alias = models.CharField(max_length=200, blank=True)
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="keys", editable=False)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="keys")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="keys"
    )
    allowed_models = models.JSONField(default=list, blank=True, help_text="Allowed model names; empty: the team's.")
    # Per-model limits and budgets for this key: {"gpt-4o": {"rpm_limit": 10, "tpm_limit": 1000, "max_budget": 5}}.
    model_limits = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    priority = models.PositiveSmallIntegerField(
        default=1, help_text="Share weight when a model is saturated; 0 is refused first."
    )
    session_max_budget = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    session_max_iterations = models.PositiveIntegerField(null=True, blank=True)
    budget_clamp_max_tokens = models.BooleanField(
        default=False,
        help_text="When a budget cannot pay for the whole max_tokens, lower max_tokens to what it can pay for "
        "(the request runs and still cannot overspend) instead of refusing it. On for the team: on for its keys.",
    )
    cache_ttl_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Response cache: identical chat, completion and embedding requests of this organization are "
        "answered from the cache for this many seconds. Empty: the team's setting; 0: off for this key.",
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    blocked = models.BooleanField(default=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "revoked_at"])]
        # An alias names one key in its team (revoked ones included: the ledger and the audit trail show
        # aliases, and two keys answering to one name make them ambiguous). Empty aliases are not names.
        constraints = [
            models.UniqueConstraint(
                fields=["team", "alias"],
                condition=~models.Q(alias=""),
                name="keys_virtualkey_alias_unique_per_team",
                violation_error_message="another key in this team already has this alias.",
            )
        ]

    def __str__(self) -> str:
        return self.alias or self.prefix

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.blocked:
            return "blocked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"


class ApiToken(models.Model):
    """A per-user bearer token for the provisioning API; acts with that user's tenant rights."""

    TENANT_PATHS = TenantPaths(owner="user")

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=32, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"
