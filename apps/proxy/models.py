"""Where models run: deployments (one upstream each) grouped under a public model name."""

from __future__ import annotations

from django.db import models

from apps.proxy import crypto
from apps.teams.models import Organization
from apps.teams.scoping import TenantPaths, TenantQuerySet


class Provider(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    OPENAI_COMPATIBLE = "openai_compatible", "OpenAI-compatible (vLLM, Ollama, LM Studio, hosted)"
    AZURE = "azure", "Azure OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"
    GEMINI = "gemini", "Google Gemini"
    BEDROCK = "bedrock", "AWS Bedrock"
    MOCK = "mock", "Built-in mock"


class RoutingStrategy(models.TextChoices):
    SIMPLE_SHUFFLE = "simple-shuffle", "Weighted shuffle"
    LEAST_BUSY = "least-busy", "Least busy"
    LOWEST_LATENCY = "lowest-latency", "Lowest latency"
    LOWEST_COST = "lowest-cost", "Lowest cost"


class ModelDeployment(models.Model):
    """One upstream serving a public ``model_name``. Several deployments of one name form a group.

    ``organization`` empty: shared by every tenant (managed by superusers).
    """

    TENANT_PATHS = TenantPaths(organization="organization", shared=True)
    ENCRYPTED_FIELDS = ("credentials_encrypted",)  # re-encrypted by manage.py rotate_credentials

    model_name = models.CharField(max_length=200, db_index=True, help_text="The name clients ask for.")
    # A config file's handle on this row (gateway_apply finds it again by this name); blank for rows made
    # in the admin or the API, which export as ``deployment-<id>``.
    name = models.CharField(max_length=200, blank=True, default="", help_text="Stable name in config files.")
    provider = models.CharField(max_length=32, choices=Provider.choices)
    model = models.CharField(max_length=200, help_text="The upstream's model id.")
    api_base = models.URLField(max_length=500, blank=True)
    api_version = models.CharField(max_length=40, blank=True, help_text="Azure api-version.")
    region = models.CharField(max_length=40, blank=True, help_text="AWS region for Bedrock.")
    credentials_encrypted = models.TextField(blank=True, editable=False)
    # Where the key came from when a config file set it ("os.environ/OPENAI_API_KEY"): a variable's name,
    # never its value, so gateway_export writes the same reference back. Blank once a key is typed in.
    credentials_ref = models.CharField(max_length=200, blank=True, default="", editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, null=True, blank=True, related_name="deployments"
    )
    input_cost_per_token = models.DecimalField(max_digits=20, decimal_places=12, null=True, blank=True)
    output_cost_per_token = models.DecimalField(max_digits=20, decimal_places=12, null=True, blank=True)
    cached_input_cost_per_token = models.DecimalField(max_digits=20, decimal_places=12, null=True, blank=True)
    # Prompt-cache writes (Anthropic's cache_creation_input_tokens); empty: 1.25x input for Claude models.
    cache_creation_input_token_cost = models.DecimalField(max_digits=20, decimal_places=12, null=True, blank=True)
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="This deployment's capacity.")
    tpm_limit = models.PositiveBigIntegerField(null=True, blank=True)
    max_parallel_requests = models.PositiveIntegerField(null=True, blank=True)
    weight = models.PositiveIntegerField(default=1, help_text="Share for the weighted-shuffle strategy.")
    priority = models.PositiveSmallIntegerField(default=0, help_text="Lower is tried first for fallbacks.")
    timeout_seconds = models.FloatField(null=True, blank=True)
    extra = models.JSONField(default=dict, blank=True, help_text="Provider-specific options.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["model_name", "priority", "id"]

    def __str__(self) -> str:
        return f"{self.model_name} -> {self.provider}/{self.model}"

    def set_credentials(self, api_key: str) -> None:
        self.credentials_encrypted = crypto.encrypt(api_key)

    def get_credentials(self) -> str:
        return crypto.decrypt(self.credentials_encrypted)

    @property
    def has_credentials(self) -> bool:
        return bool(self.credentials_encrypted)


class ModelGroup(models.Model):
    """Routing settings for one public model name (optional: defaults apply without a row)."""

    TENANT_PATHS = TenantPaths()

    model_name = models.CharField(max_length=200, unique=True)
    strategy = models.CharField(max_length=32, choices=RoutingStrategy.choices, default=RoutingStrategy.SIMPLE_SHUFFLE)
    fallbacks = models.JSONField(default=list, blank=True, help_text="Model names tried after this group fails.")
    num_retries = models.PositiveSmallIntegerField(null=True, blank=True)
    rpm_capacity = models.PositiveIntegerField(null=True, blank=True, help_text="For the priority limiter.")
    tpm_capacity = models.PositiveBigIntegerField(null=True, blank=True)

    objects = TenantQuerySet.as_manager()

    def __str__(self) -> str:
        return self.model_name


class ModelAlias(models.Model):
    """Another public name for a model group (e.g. ``gpt-4`` -> ``gpt-4o``)."""

    TENANT_PATHS = TenantPaths()

    alias = models.CharField(max_length=200, unique=True)
    model_name = models.CharField(max_length=200)

    objects = TenantQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return f"{self.alias} -> {self.model_name}"


class GatewayObject(models.Model):
    """A file or batch created through the gateway, recorded for its organization.

    The ids clients hold are signed handles (``apps.proxy.handles``) and need no record; listing does:
    an upstream account is shared by every tenant, so its own list cannot be scoped. ``GET /v1/files``
    and ``GET /v1/batches`` answer from these rows only.
    """

    class Kind(models.TextChoices):
        FILE = "file", "file"
        BATCH = "batch", "batch"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    organization = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    deployment_id = models.BigIntegerField()  # no foreign key: the record outlives a deleted deployment
    upstream_id = models.CharField(max_length=255)
    public_id = models.TextField()  # the signed handle the client got
    purpose = models.CharField(max_length=64, blank=True, default="")
    snapshot = models.JSONField(default=dict)  # the object as the client first saw it (ids wrapped)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["kind", "organization", "-id"], name="proxy_gwobj_list"),
            models.Index(fields=["deployment_id", "upstream_id"], name="proxy_gwobj_upstream"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.upstream_id}"
