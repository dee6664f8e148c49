"""Upstream MCP servers an organization registers, and who may use which of their tools.

Access is granted, never assumed: a key reaches a server's tools only through an ``McpGrant`` of its
team (the ceiling) and, optionally, grants of the key itself (which narrow the team's). A grant names
its tools, or says ``all_tools``; a grant with neither reaches nothing. See docs/mcp.md.
"""

from __future__ import annotations

import json
from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models

from apps.keys.models import VirtualKey
from apps.proxy import crypto
from apps.teams.models import Organization, Team
from apps.teams.scoping import TenantPaths, TenantQuerySet

# Tool names the caller sees: "<server>__<tool>". Server names may not contain the separator, so the first
# occurrence splits a name unambiguously (upstream tool names may contain it).
TOOL_SEPARATOR = "__"


class Transport(models.TextChoices):
    STREAMABLE_HTTP = "streamable_http", "Streamable HTTP"
    SSE = "sse", "SSE (legacy HTTP+SSE)"
    STDIO = "stdio", "stdio (local command; superusers only)"


class McpServer(models.Model):
    """One upstream MCP server of an organization. Its headers (credentials) are stored encrypted."""

    TENANT_PATHS = TenantPaths(organization="organization")
    ENCRYPTED_FIELDS = ("headers_encrypted",)  # re-encrypted by manage.py rotate_credentials

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="mcp_servers")
    name = models.CharField(max_length=64, help_text=f"Prefix of its tools' names (<name>{TOOL_SEPARATOR}<tool>).")
    transport = models.CharField(max_length=16, choices=Transport.choices, default=Transport.STREAMABLE_HTTP)
    url = models.URLField(max_length=500, blank=True, help_text="Streamable HTTP or SSE endpoint.")
    command = models.CharField(max_length=500, blank=True, help_text="stdio only: the program to start.")
    args = models.JSONField(default=list, blank=True, help_text="stdio only: its arguments (a JSON list).")
    # A JSON object of HTTP headers (Authorization, API keys...), Fernet-encrypted as one blob; write-only.
    headers_encrypted = models.TextField(blank=True, default="", editable=False)
    # Where each header came from when a config file set it ({"Authorization": "os.environ/SEARCH_TOKEN"}): the
    # variables' names, never their values, so gateway_export writes the same references back. {} once typed in.
    headers_ref = models.JSONField(default=dict, blank=True, editable=False)
    price_per_call = models.DecimalField(
        max_digits=14,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="USD charged per tool call (empty: free).",
    )
    tool_prices = models.JSONField(
        default=dict, blank=True, help_text='USD per call of single tools, overriding the above: {"search": "0.01"}.'
    )
    timeout_seconds = models.FloatField(default=60.0, help_text="Longest wait for one upstream answer.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["organization_id", "name"]
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="mcp_server_unique_name")]
        verbose_name = "MCP server"

    def __str__(self) -> str:
        return self.name

    def set_headers(self, headers: dict[str, str]) -> None:
        self.headers_encrypted = crypto.encrypt(json.dumps(headers)) if headers else ""

    def get_headers(self) -> dict[str, str]:
        text = crypto.decrypt(self.headers_encrypted)
        return json.loads(text) if text else {}

    @property
    def has_headers(self) -> bool:
        return bool(self.headers_encrypted)


class McpGrant(models.Model):
    """Which tools of one server a team (or one key) may use, and how often.

    Exactly one of ``team`` and ``key`` is set. ``all_tools`` or the names in ``tools`` (the upstream's
    own names, without the server prefix); neither: nothing. The limits count this grant's tool calls
    (per key, whichever grant a key's team or key holds); empty: no MCP-specific limit.
    """

    TENANT_PATHS = TenantPaths(organization="organization")

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+", editable=False)
    server = models.ForeignKey(McpServer, on_delete=models.CASCADE, related_name="grants")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, null=True, blank=True, related_name="mcp_grants")
    key = models.ForeignKey(VirtualKey, on_delete=models.CASCADE, null=True, blank=True, related_name="mcp_grants")
    all_tools = models.BooleanField(default=False, help_text="Every tool the server offers, now and later.")
    tools = models.JSONField(default=list, blank=True, help_text="Tool names (without the server prefix).")
    tool_calls_per_minute = models.PositiveIntegerField(null=True, blank=True)
    max_parallel_tool_calls = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["server_id", "id"]
        verbose_name = "MCP grant"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(team__isnull=False, key__isnull=True)
                | models.Q(team__isnull=True, key__isnull=False),
                name="mcp_grant_team_xor_key",
            ),
            models.UniqueConstraint(fields=["server", "team"], name="mcp_grant_unique_team"),
            models.UniqueConstraint(fields=["server", "key"], name="mcp_grant_unique_key"),
        ]

    def __str__(self) -> str:
        holder = f"team {self.team}" if self.team_id else f"key {self.key}"
        return f"{self.server} for {holder}"
