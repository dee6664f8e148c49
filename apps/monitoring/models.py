"""What monitoring keeps: the latest probe of each deployment; alert channels and the alerts sent."""

from __future__ import annotations

from django.db import models

from apps.teams.scoping import TenantPaths, TenantQuerySet


class DeploymentProbe(models.Model):
    """The latest scheduled probe of one deployment (one row each, overwritten every interval).

    Only the latest result is kept: the health page and the alert rule ask "does it answer now?";
    the history of real traffic is the spend ledger's. No tenant paths of its own: it is only read for
    deployments the reader has already been allowed to see (``ModelDeployment.objects.restrict``).
    """

    deployment = models.OneToOneField("proxy.ModelDeployment", on_delete=models.CASCADE, related_name="probe")
    ok = models.BooleanField()
    status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="The upstream's HTTP status.")
    latency_ms = models.FloatField(default=0)
    detail = models.CharField(max_length=250, blank=True, help_text="The upstream's message, secrets scrubbed.")
    probed_at = models.DateTimeField()
    consecutive_failures = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"probe of deployment {self.deployment_id}: {'ok' if self.ok else 'failed'}"


def _loose_fk(to: str) -> models.ForeignKey:
    """Like the ledger's references: an alert outlives the tenant or deployment it was about."""
    return models.ForeignKey(
        to, on_delete=models.DO_NOTHING, db_constraint=False, null=True, blank=True, related_name="+", db_index=False
    )


class AlertRule(models.TextChoices):
    """What an alert is about: the rule names channels subscribe to and the ``type`` of every payload."""

    DEPLOYMENT_UNHEALTHY = "deployment.unhealthy", "a deployment fails, is cooling down or fails its probe"
    LIMITS_REPEATED = "limits.repeated", "a key or team is refused by its limits repeatedly"
    SPEND_ANOMALY = "spend.anomaly", "today's spend is a multiple of the 7-day average"
    BUDGET_SOFT = "budget.soft", "a soft budget is reached"
    BUDGET_HARD = "budget.hard", "a budget is reached"


class AlertChannel(models.Model):
    """Where an organization's (or one team's) alerts go: e-mail addresses, a JSON webhook or Slack.

    Webhook and Slack URLs are secrets (a Slack incoming-webhook URL is its own credential): stored
    encrypted like deployment credentials, write-only in the admin, never logged or shown back. A
    channel without an organization is the operator's and receives every tenant's alerts.
    """

    TENANT_PATHS = TenantPaths(organization="organization", team="team")
    ENCRYPTED_FIELDS = ("url_encrypted",)  # re-encrypted by manage.py rotate_credentials

    class Kind(models.TextChoices):
        EMAIL = "email", "e-mail"
        WEBHOOK = "webhook", "webhook (JSON)"
        SLACK = "slack", "Slack incoming webhook"

    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    organization = models.ForeignKey(
        "teams.Organization",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="alert_channels",
        help_text="Empty: the operator's channel, for every tenant's alerts (superusers only).",
    )
    team = models.ForeignKey(
        "teams.Team",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="alert_channels",
        help_text="Empty: every alert of the organization; set: only this team's.",
    )
    rules = models.JSONField(default=list, blank=True, help_text="Alert types to send; empty means all.")
    recipients = models.TextField(blank=True, help_text="E-mail channels: addresses, comma or newline separated.")
    url_encrypted = models.TextField(blank=True, editable=False)
    enabled = models.BooleanField(default=True)
    last_status = models.CharField(max_length=80, blank=True, editable=False)
    last_sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["organization_id", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def recipient_list(self) -> list[str]:
        parts = self.recipients.replace("\n", ",").replace(";", ",").split(",")
        return [p.strip() for p in parts if p.strip()]

    def wants(self, rule: str) -> bool:
        return not self.rules or rule in self.rules

    @property
    def has_url(self) -> bool:
        return bool(self.url_encrypted)


class AlertEvent(models.Model):
    """One alert, sent once: UNIQUE per (rule, subject, window), created before anything is sent, so two
    workers evaluating the same minute cannot both deliver it. Deliveries are recorded, not retried."""

    TENANT_PATHS = TenantPaths(organization="organization", team="team")

    rule = models.CharField(max_length=32, choices=AlertRule.choices)
    subject = models.CharField(max_length=300, help_text='What it is about, e.g. "deployment:12", "key:5".')
    window_id = models.CharField(max_length=40)
    organization = _loose_fk("teams.Organization")
    team = _loose_fk("teams.Team")
    title = models.CharField(max_length=300)
    text = models.TextField(blank=True)
    facts = models.JSONField(default=dict, blank=True)
    deliveries = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "subject", "window_id"], name="alertevent_once_per_window"),
        ]
        indexes = [models.Index(fields=["created_at"], name="alertevent_created")]

    def __str__(self) -> str:
        return f"{self.rule} {self.subject} {self.window_id}"
