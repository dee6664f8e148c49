"""Where a tenant's ledger records are also sent: an HTTP endpoint, Langfuse, or S3-compatible storage.

A sink belongs to an organization (every record of the organization) or to one of its teams (that
team's records only). Its secret (the HMAC key, Langfuse's secret key, the S3 secret access key) is
stored encrypted like deployment credentials (``apps.proxy.crypto``) and never shown back.
"""

from __future__ import annotations

from django.db import models

from apps.proxy import crypto
from apps.teams.models import Organization, Team
from apps.teams.scoping import TenantPaths, TenantQuerySet


class SinkKind(models.TextChoices):
    HTTP = "http", "HTTP JSON (signed webhook)"
    LANGFUSE = "langfuse", "Langfuse"
    S3 = "s3", "S3-compatible object storage (JSONL)"


class LogSink(models.Model):
    TENANT_PATHS = TenantPaths(organization="organization", team="team")

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=SinkKind.choices)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="log_sinks")
    team = models.ForeignKey(
        Team,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="log_sinks",
        help_text="Empty: every record of the organization. Set: only this team's records.",
    )
    url = models.URLField(
        max_length=500,
        blank=True,
        help_text="HTTP: the endpoint records are POSTed to. Langfuse: its host (https://cloud.langfuse.com). "
        "S3: the endpoint URL of an S3-compatible server (empty: AWS).",
    )
    access_id = models.CharField(
        max_length=200, blank=True, help_text="Langfuse: the public key. S3: the access key id. HTTP: unused."
    )
    secret_encrypted = models.TextField(blank=True, editable=False)
    bucket = models.CharField(max_length=200, blank=True, help_text="S3 only.")
    prefix = models.CharField(max_length=200, blank=True, help_text="S3 only: object key prefix.")
    region = models.CharField(max_length=40, blank=True, help_text="S3 only (default us-east-1).")
    capture_bodies = models.BooleanField(
        default=False,
        help_text="Also send what the request recorded beyond the ledger's columns (its metadata: retries and "
        "deployments tried). The ledger holds no prompt or completion text.",
    )
    batch_size = models.PositiveIntegerField(default=100, help_text="Records per delivery (one POST or object).")
    enabled = models.BooleanField(default=True)
    # Delivery status, written by the delivering worker (apps/sinks/services.py), read-only in the admin.
    delivered_count = models.PositiveBigIntegerField(default=0, editable=False)
    dropped_count = models.PositiveBigIntegerField(default=0, editable=False)
    last_success_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.CharField(max_length=500, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["organization", "team", "name", "id"]
        indexes = [models.Index(fields=["enabled"], name="logsink_enabled")]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def set_secret(self, secret: str) -> None:
        self.secret_encrypted = crypto.encrypt(secret)

    def get_secret(self) -> str:
        return crypto.decrypt(self.secret_encrypted)

    @property
    def has_secret(self) -> bool:
        return bool(self.secret_encrypted)
