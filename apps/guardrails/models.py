"""Per-tenant guardrail configuration: one policy per organization, per team and per key (docs/guardrails.md)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from apps.teams.scoping import TenantPaths, TenantQuerySet


class GuardrailPolicy(models.Model):
    """The guardrail sections one scope sets (``apps.guardrails.policy``): the key's over its team's over its
    organization's. A team policy has ``team`` set; a key policy has ``key`` (and its team and organization,
    so the same tenant scoping applies)."""

    TENANT_PATHS = TenantPaths(organization="organization", team="team")

    organization = models.ForeignKey("teams.Organization", on_delete=models.CASCADE, related_name="guardrail_policies")
    team = models.ForeignKey(
        "teams.Team",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="guardrail_policies",
        help_text="Empty: the organization's policy.",
    )
    key = models.OneToOneField(
        "keys.VirtualKey",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="guardrail_policy",
        help_text="Set: this key's own policy (over its team's).",
    )
    config = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["organization_id", "team_id", "key_id"]
        verbose_name = "guardrail policy"
        verbose_name_plural = "guardrail policies"
        constraints = [
            models.UniqueConstraint(
                fields=["organization"], condition=Q(team__isnull=True, key__isnull=True), name="guardrail_one_per_org"
            ),
            models.UniqueConstraint(fields=["team"], condition=Q(key__isnull=True), name="guardrail_one_per_team"),
            models.CheckConstraint(
                condition=Q(key__isnull=True) | Q(team__isnull=False), name="guardrail_key_has_team"
            ),
        ]

    def __str__(self) -> str:
        if self.key_id:
            return f"guardrails of key {self.key}"
        if self.team_id:
            return f"guardrails of team {self.team}"
        return f"guardrails of {self.organization}"

    @property
    def scope(self) -> str:
        return "key" if self.key_id else "team" if self.team_id else "organization"
