"""The spend ledger and what is derived from it.

``SpendLog`` is append-only and exact: one row per finished /v1 request, UNIQUE on (request id, finish
time), both carried by the event, so replaying the outbox changes nothing. On Postgres it is range-partitioned
by month on that finish time (``apps.spend.partitions``; docs/spend.md, "The ledger at scale").
``DailySpend`` and ``BudgetWindow`` are running totals derived
from the rows actually inserted; ``spend_rebuild_totals`` recomputes both from the ledger.

References to tenants, keys and deployments are plain foreign keys without database constraints:
the ledger must outlive a deleted key or team, and ingestion must never fail on a dangling id.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from apps.teams.scoping import TenantPaths, TenantQuerySet

COST = {"max_digits": 24, "decimal_places": 10}


def _loose_fk(to: str, related_name: str = "+") -> models.ForeignKey:
    return models.ForeignKey(
        to,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        blank=True,
        related_name=related_name,
        db_index=False,
    )


class SpendLog(models.Model):
    """One finished /v1 request: success, upstream error, refusal after reservation, or cut-short stream."""

    TENANT_PATHS = TenantPaths(organization="organization", team="team", owner="user")

    # Unique together with created_at (Meta.constraints), not alone: a partitioned table's unique indexes must
    # hold the partition key. That index leads with request_id, so lookups by request id alone use it.
    request_id = models.CharField(max_length=64)
    # The partition key: the time the event itself carries, so a redelivered event has the same value.
    created_at = models.DateTimeField(help_text="When the request finished.")
    route = models.CharField(max_length=64, blank=True)
    status = models.PositiveSmallIntegerField()
    model = models.CharField(max_length=200, blank=True)
    llm_provider = models.CharField(max_length=32, blank=True)
    deployment = _loose_fk("proxy.ModelDeployment")
    organization = _loose_fk("teams.Organization")
    team = _loose_fk("teams.Team")
    key = _loose_fk("keys.VirtualKey")
    key_alias = models.CharField(max_length=200, blank=True)
    user = _loose_fk(settings.AUTH_USER_MODEL)
    customer_id = models.CharField(max_length=255, blank=True, default="", help_text="End user's external id.")
    session_id = models.CharField(max_length=255, blank=True, default="")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(**COST, default=0)
    latency_ms = models.FloatField(default=0, help_text="Total time, from arrival to the end of the answer.")
    ttft_ms = models.FloatField(null=True, blank=True)
    overhead_ms = models.FloatField(
        null=True, blank=True, help_text="The gateway's own time (what x-gateway-overhead-ms said)."
    )
    upstream_ttfb_ms = models.FloatField(
        null=True, blank=True, help_text="The last attempt's time until the upstream's response head."
    )
    retries = models.PositiveSmallIntegerField(default=0, help_text="Attempts after the first.")
    error_type = models.CharField(max_length=64, blank=True, default="")
    limit_type = models.CharField(max_length=32, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    trace_id = models.CharField(
        max_length=32, blank=True, default="", help_text="OpenTelemetry trace id (32 hex) when the request was traced."
    )
    cache_hit = models.BooleanField(default=False, help_text="Answered from the gateway's response cache (cost 0).")
    cost_saved = models.DecimalField(
        **COST, default=0, help_text="A cache hit: what the cached answer cost when the upstream produced it."
    )
    guardrails = models.JSONField(
        default=dict,
        blank=True,
        help_text='Each guardrail\'s outcome, e.g. {"pii": {"request": "masked", "categories": ["email"]}}.',
    )
    # Which ingestion batch inserted the row: tells a batch exactly which of its rows were new.
    ingest_batch = models.UUIDField(null=True, blank=True, editable=False)

    objects = TenantQuerySet.as_manager()

    # Django's primary key stays ``id`` (a BigAutoField, unique by its sequence). On Postgres the table's
    # PRIMARY KEY is (id, created_at), as partitioning requires; ``id`` alone still finds a row through it.
    class Meta:
        verbose_name = "request"  # the admin's request explorer (one row per finished /v1 request)
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["request_id", "created_at"], name="spendlog_request_unique"),
        ]
        indexes = [
            models.Index(fields=["created_at", "id"], name="spendlog_created"),
            models.Index(fields=["key", "created_at"], name="spendlog_key"),
            models.Index(fields=["team", "created_at"], name="spendlog_team"),
            models.Index(fields=["organization", "created_at"], name="spendlog_org"),
            models.Index(fields=["user", "created_at"], name="spendlog_user"),
            models.Index(fields=["customer_id", "created_at"], name="spendlog_customer"),
            models.Index(fields=["model", "created_at"], name="spendlog_model"),
            # The request explorer's other filters (apps/console/explorer.py): a deployment's requests, and the
            # rare rows (errors, refusals) found without walking the whole ledger. Partial: small and cheap.
            models.Index(fields=["deployment", "created_at"], name="spendlog_deployment"),
            models.Index(fields=["created_at", "id"], name="spendlog_errors", condition=models.Q(status__gte=400)),
            models.Index(
                fields=["limit_type", "created_at"], name="spendlog_limited", condition=~models.Q(limit_type="")
            ),
            # The explorer's search by trace id; partial: only traced requests carry one.
            models.Index(fields=["trace_id"], name="spendlog_trace", condition=~models.Q(trace_id="")),
        ]

    def __str__(self) -> str:
        return self.request_id

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class DailySpend(models.Model):
    """Totals per UTC day x organization x team x key x user x customer x model x deployment.

    ``bucket`` is the unique text of those dimensions so an upsert can increment the row in one
    statement on both Postgres and SQLite (nullable columns can't be a plain unique key).
    """

    TENANT_PATHS = TenantPaths(organization="organization", team="team", owner="user")

    bucket = models.CharField(max_length=600, unique=True, editable=False)
    day = models.DateField()
    organization = _loose_fk("teams.Organization")
    team = _loose_fk("teams.Team")
    key = _loose_fk("keys.VirtualKey")
    user = _loose_fk(settings.AUTH_USER_MODEL)
    customer_id = models.CharField(max_length=255, blank=True, default="")
    model = models.CharField(max_length=200, blank=True)
    deployment = _loose_fk("proxy.ModelDeployment")
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(**COST, default=0)

    objects = TenantQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "daily spend"
        ordering = ["-day"]
        indexes = [
            # Covering: the dashboard's per-day chart (any viewer's tenant filter, the cost) is an index-only scan.
            models.Index(
                fields=["day"],
                include=["organization", "team", "user", "cost", "requests"],
                name="dailyspend_day_totals",
            ),
            models.Index(fields=["organization", "day"], name="dailyspend_org"),
            models.Index(fields=["team", "day"], name="dailyspend_team"),
            models.Index(fields=["key", "day"], name="dailyspend_key"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.model} {self.cost}"


class MonthlySpend(models.Model):
    """``DailySpend`` summed per UTC month (``month`` is its first day): the same dimensions, ~30 times fewer rows.

    What the dashboard's "this month", the all-time and multi-month summaries and the reports read, so they
    stay fast at hundreds of millions of ledger rows (docs/spend.md, "The ledger at scale"). Maintained by
    ingestion in the same transaction as ``DailySpend``; ``bucket`` as there, with the month for the day.
    """

    TENANT_PATHS = TenantPaths(organization="organization", team="team", owner="user")

    bucket = models.CharField(max_length=600, unique=True, editable=False)
    month = models.DateField(help_text="The month's first day (UTC).")
    organization = _loose_fk("teams.Organization")
    team = _loose_fk("teams.Team")
    key = _loose_fk("keys.VirtualKey")
    user = _loose_fk(settings.AUTH_USER_MODEL)
    customer_id = models.CharField(max_length=255, blank=True, default="")
    model = models.CharField(max_length=200, blank=True)
    deployment = _loose_fk("proxy.ModelDeployment")
    requests = models.PositiveBigIntegerField(default=0)
    errors = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    cost = models.DecimalField(**COST, default=0)

    objects = TenantQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "monthly spend"
        ordering = ["-month"]
        indexes = [
            models.Index(fields=["month"], name="monthlyspend_month"),
            models.Index(fields=["organization", "month"], name="monthlyspend_org"),
            models.Index(fields=["team", "month"], name="monthlyspend_team"),
            models.Index(fields=["key", "month"], name="monthlyspend_key"),
        ]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} {self.model} {self.cost}"


class BudgetWindow(models.Model):
    """Running spend of one scope in one budget window; rows of closed windows are the history.

    ``scope`` is key | user | team | organization | customer | model; ``scope_id`` is the pk as text,
    ``"key:<id>:<model>"`` / ``"team:<id>:<model>"`` for the per-model budgets (``apps.spend.scopes``);
    ``window_id`` comes from ``apps.spend.windows`` (``"all"`` without a duration).
    """

    TENANT_PATHS = TenantPaths(organization="organization", team="team", owner="user")

    scope = models.CharField(max_length=16)
    scope_id = models.CharField(max_length=300)
    window_id = models.CharField(max_length=40)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    organization = _loose_fk("teams.Organization")
    team = _loose_fk("teams.Team")
    user = _loose_fk(settings.AUTH_USER_MODEL)
    spent = models.DecimalField(**COST, default=0)
    requests = models.PositiveBigIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True, help_text="Set by the roll job once the window ended.")

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-window_start", "scope", "scope_id"]
        constraints = [
            models.UniqueConstraint(fields=["scope", "scope_id", "window_id"], name="budgetwindow_unique"),
        ]
        indexes = [
            models.Index(fields=["closed_at", "window_end"], name="budgetwindow_open"),
            models.Index(fields=["updated_at"], name="budgetwindow_updated"),
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.scope_id} {self.window_id}: {self.spent}"


class BudgetAlert(models.Model):
    """A soft or hard budget alert; UNIQUE per scope, window and kind, so each is sent once per window."""

    TENANT_PATHS = TenantPaths(organization="organization", team="team")

    class Kind(models.TextChoices):
        SOFT = "soft", "soft budget reached"
        HARD = "hard", "hard budget reached"

    scope = models.CharField(max_length=16)
    scope_id = models.CharField(max_length=300)
    window_id = models.CharField(max_length=40)
    kind = models.CharField(max_length=4, choices=Kind.choices)
    threshold = models.DecimalField(**COST)
    spent = models.DecimalField(**COST)
    organization = _loose_fk("teams.Organization")
    team = _loose_fk("teams.Team")
    recipients = models.TextField(blank=True)
    emailed = models.BooleanField(default=False)
    webhook_status = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["scope", "scope_id", "window_id", "kind"], name="budgetalert_once"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.scope} {self.scope_id} {self.window_id}"


class Report(models.Model):
    """A scheduled spend report a tenant admin sets up: which scope, period, grouping, format, recipients."""

    TENANT_PATHS = TenantPaths(organization="organization", team="team")

    class Period(models.TextChoices):
        DAILY = "daily", "daily (yesterday)"
        WEEKLY = "weekly", "weekly (last Monday-Sunday)"
        MONTHLY = "monthly", "monthly (last calendar month)"

    class GroupBy(models.TextChoices):
        TEAM = "team", "team"
        KEY = "key", "key"
        USER = "user", "user"
        MODEL = "model", "model"
        DAY = "day", "day"
        CUSTOMER = "customer", "customer"

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        HTML = "html", "HTML"

    name = models.CharField(max_length=200)
    organization = models.ForeignKey("teams.Organization", on_delete=models.CASCADE, related_name="spend_reports")
    team = models.ForeignKey(
        "teams.Team",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="spend_reports",
        help_text="Empty: the whole organization.",
    )
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.MONTHLY)
    group_by = models.CharField(max_length=8, choices=GroupBy.choices, default=GroupBy.TEAM)
    format = models.CharField(max_length=4, choices=Format.choices, default=Format.CSV)
    recipients = models.TextField(blank=True, help_text="E-mail addresses, comma or newline separated.")
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["organization__name", "name"]

    def __str__(self) -> str:
        return self.name

    def recipient_list(self) -> list[str]:
        parts = self.recipients.replace("\n", ",").replace(";", ",").split(",")
        return [p.strip() for p in parts if p.strip()]


class ReportRun(models.Model):
    """One generated report for one period: the stored file (downloadable in the admin) and who got it."""

    TENANT_PATHS = TenantPaths(organization="report__organization", team="report__team")

    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="runs")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    format = models.CharField(max_length=4, choices=Report.Format.choices)
    file = models.FileField(upload_to="reports/%Y/%m/", blank=True)
    row_count = models.PositiveIntegerField(default=0)
    total_cost = models.DecimalField(**COST, default=0)
    mailed_to = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["-period_start", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["report", "period_start"], name="reportrun_once_per_period"),
        ]

    def __str__(self) -> str:
        return f"{self.report} {self.period_start:%Y-%m-%d}"
