"""Settings shared by every environment. The environment is read here, once, through typed helpers."""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from apps.common.redis_target import redis_targets_from_env
from gateway_project.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
    persistent_secret,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
RUN_DIR = Path(env_str("GATEWAY_RUN_DIR") or BASE_DIR / ".run")

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = persistent_secret("DJANGO_SECRET_KEY", RUN_DIR)
# Pepper for the keyed hash (HMAC-SHA256) of virtual keys and API tokens. Changing it invalidates every key.
GATEWAY_SECRET_KEY = persistent_secret("GATEWAY_SECRET_KEY", RUN_DIR)
GATEWAY_MASTER_KEY = env_str("GATEWAY_MASTER_KEY", "") or ""
# Fernet keys for provider credentials at rest, newest first; older keys still decrypt (rotation).
GATEWAY_ENCRYPTION_KEYS = env_list("GATEWAY_ENCRYPTION_KEYS")

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    # django.contrib.admin with an admin.site that refuses list filters a changelist does not offer.
    "apps.teams.admin_site.GatewayAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    # Swagger UI and Redoc as pinned static files (SPECTACULAR_SETTINGS below): /api/docs/ works offline.
    "drf_spectacular_sidecar",
    # Listed so django-ninja renders /v1/key/docs from its bundled static files instead of a CDN.
    "ninja",
    "django_celery_beat",
    "django_prometheus",
    "channels",
    "axes",
    "apps.teams",
    "apps.keys",
    "apps.proxy",
    "apps.ratelimit",
    "apps.guardrails",
    "apps.spend",
    "apps.sinks",
    "apps.monitoring",
    "apps.mcp",
    "apps.provisioning",
    "apps.sso",
    # Above every other app: the dashboard, live feed, deployment health, key usage (apps/console/__init__.py).
    "apps.console",
]

MIDDLEWARE = [
    # Health probes (and the token-guarded /metrics) by pod IP: answered before the host check below.
    "gateway_project.health.ProbeMiddleware",
    # A NUL byte in the URL or query string is a 400 before any view turns it into a query.
    "gateway_project.middleware.RejectNulMiddleware",
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "gateway_project.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "gateway_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{RUN_DIR / 'gateway.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 0))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    # WAL: the admin's readers never wait on the proxy's ledger writer (nor it on them), and a commit
    # appends to the log instead of rewriting pages through a rollback journal. synchronous=NORMAL is
    # the setting SQLite recommends with WAL: an application crash loses nothing; a power cut may lose
    # the last commits, which a single-machine embedded default accepts (production runs Postgres).
    DATABASES["default"]["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "teams.User"

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # Django's ModelBackend, refusing passwords when ADMIN_PASSWORD_LOGIN is off (break-glass accounts excepted).
    "apps.sso.backends.PasswordLoginBackend",
]
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
MEDIA_ROOT = Path(env_str("GATEWAY_MEDIA_ROOT") or RUN_DIR / "media")
MEDIA_URL = "media/"

# --- Redis, Celery, channels -------------------------------------------------------------------
# Where Redis is (apps/common/redis_target.py): REDIS_URL, or REDIS_SENTINELS + REDIS_SENTINEL_MASTER, and
# optionally REDIS_CLUSTER_NODES. Every Redis client of the gateway is built from REDIS_TARGET (the cluster
# when there is one); None = no Redis (the embedded default). Celery's broker, the channel layer and Django's
# cache use REDIS_BROKER_TARGET: never a cluster (their libraries do not speak it), else the same target.
# REDIS_URL stays the raw variable ("" with sentinels).
REDIS_TARGET, REDIS_BROKER_TARGET = redis_targets_from_env()
REDIS_URL = env_str("REDIS_URL", "") or ""

CELERY_BROKER_URL, CELERY_BROKER_TRANSPORT_OPTIONS = (
    REDIS_BROKER_TARGET.celery_broker() if REDIS_BROKER_TARGET else ("memory://", {})
)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = REDIS_TARGET is None
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

if REDIS_BROKER_TARGET:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_BROKER_TARGET.channel_layer_host()]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- REST API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.keys.authentication.MasterKeyAuthentication",
        # Before API tokens, which refuse every bearer they don't know; it passes on anything not a JWT.
        "apps.sso.authentication.OidcBearerAuthentication",
        "apps.keys.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Services raise Django's ValidationError/PermissionDenied: answered as 400 with field messages / 403.
    "EXCEPTION_HANDLER": "apps.teams.api_base.api_exception_handler",
    "DEFAULT_PAGINATION_CLASS": "apps.teams.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 100,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "LLM Gateway provisioning API",
    "DESCRIPTION": "Organizations, teams, members, virtual keys, deployments and spend.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The UI from drf-spectacular-sidecar's static files, pinned in requirements/base.txt, not a CDN's
    # @latest: offline networks get a working page, and no unreviewed script runs beside an admin session.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No validator badge: it would send the schema's URL to validator.swagger.io from every browser.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# --- Login protection --------------------------------------------------------------------------
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = env_float("AXES_COOLOFF_HOURS", 0.25, minimum=0)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "apps.teams.client_ip.client_ip"
AXES_LOCKOUT_TEMPLATE = "admin/gateway/locked_out.html"

# Admin single sign-on, OpenID Connect (apps/sso; docs/admin.md "Single sign-on"). Unset issuer: off.
OIDC_ISSUER = (env_str("OIDC_ISSUER") or "").strip().rstrip("/")
OIDC_CLIENT_ID = env_str("OIDC_CLIENT_ID") or ""
OIDC_CLIENT_SECRET = env_str("OIDC_CLIENT_SECRET") or ""
# Space- or comma-separated, as providers document them.
OIDC_SCOPES = (env_str("OIDC_SCOPES") or "openid email profile").replace(",", " ").split()
# The claim carrying the groups (dotted for a nested one, e.g. Keycloak's realm_access.roles).
OIDC_GROUPS_CLAIM = env_str("OIDC_GROUPS_CLAIM") or "groups"
OIDC_ALLOWED_EMAIL_DOMAINS = [domain.lower() for domain in env_list("OIDC_ALLOWED_EMAIL_DOMAINS")]
OIDC_PROVIDER_NAME = env_str("OIDC_PROVIDER_NAME") or "single sign-on"
OIDC_HTTP_TIMEOUT_SECONDS = env_float("OIDC_HTTP_TIMEOUT_SECONDS", 5.0, minimum=0.1)
# The REST API accepts the issuer's JWT access tokens issued for this audience; empty: it does not.
OIDC_API_AUDIENCE = env_str("OIDC_API_AUDIENCE") or ""
OIDC_API_RESYNC_SECONDS = env_int("OIDC_API_RESYNC_SECONDS", 300, minimum=0)
# on: the admin's password form works for everyone; off: only for the break-glass superusers listed.
ADMIN_PASSWORD_LOGIN = env_bool("ADMIN_PASSWORD_LOGIN", True)
ADMIN_BREAK_GLASS_USERS = env_list("ADMIN_BREAK_GLASS_USERS")
# Admin sessions (password or single sign-on) end this long after sign-in.
SESSION_COOKIE_AGE = env_int("ADMIN_SESSION_SECONDS", 12 * 3600, minimum=60)
if OIDC_ISSUER and not OIDC_ISSUER.startswith(("https://", "http://")):
    raise ImproperlyConfigured(f"OIDC_ISSUER={OIDC_ISSUER!r} is not an http(s) URL")
if OIDC_ISSUER and not OIDC_CLIENT_ID:
    raise ImproperlyConfigured("OIDC_ISSUER is set: OIDC_CLIENT_ID is required too")
if OIDC_API_AUDIENCE and OIDC_API_AUDIENCE == OIDC_CLIENT_ID:
    # Else the admin's own ID tokens (audience: the client) would be accepted as API credentials.
    raise ImproperlyConfigured("OIDC_API_AUDIENCE must differ from OIDC_CLIENT_ID")
if not ADMIN_PASSWORD_LOGIN and not OIDC_ISSUER:
    raise ImproperlyConfigured("ADMIN_PASSWORD_LOGIN=off needs single sign-on (OIDC_ISSUER) or nobody can sign in")
# How many reverse proxies of ours append to X-Forwarded-For (0: none, use the socket's address). Decides
# the client address for lockouts and the audit trail; production sits behind one TLS proxy.
GATEWAY_TRUSTED_PROXY_COUNT = env_int("GATEWAY_TRUSTED_PROXY_COUNT", 0, minimum=0)

# --- Gateway hot path --------------------------------------------------------------------------
# Rate-limit middleware chain around every /v1 call, in order (like Django's MIDDLEWARE).
# Limiters only add checks; the chain reserves them all in one atomic step (apps/ratelimit/plan.py).
PROXY_MIDDLEWARE: list[str] = [
    "apps.ratelimit.middleware.MetricsMiddleware",  # first: its post_call sees every request
    "apps.ratelimit.middleware.BatchLimiter",  # before the RPM/TPM limiters: sets how many requests a batch is
    "apps.ratelimit.middleware.ParallelRequestLimiter",
    "apps.ratelimit.middleware.RateLimiter",
    "apps.ratelimit.middleware.DeploymentCapacityLimiter",
    "apps.ratelimit.middleware.PriorityLimiter",
    "apps.ratelimit.middleware.BudgetLimiter",
    "apps.ratelimit.middleware.SessionLimiter",
]
# Guardrails around every /v1 model call, in order (docs/guardrails.md). Each acts only for keys whose
# policy (organization, team, key) switches it on; the cheap ones first, the classifiers last (they read
# the text the PII guardrail masked).
PROXY_GUARDRAILS: list[str] = [
    "apps.guardrails.checks.MaxInputSize",
    "apps.guardrails.checks.DenyList",
    "apps.guardrails.pii.PiiGuardrail",
    "apps.guardrails.moderation.ModerationGuardrail",
    "apps.guardrails.moderation.PromptInjectionGuardrail",
]
# What the limiters do when Redis is unusable: "open" (admit uncounted) or "closed" (503).
RATELIMIT_FAIL_MODE = env_choice("RATELIMIT_FAIL_MODE", "open", ("open", "closed"))
# Unusable = a refused/failed connect, or a command on the socket this long without a byte from Redis
# (measured by a watchdog, not by the request: a busy worker never counts as a slow Redis); also the
# bound on opening a connection. See docs/ratelimit.md.
RATELIMIT_REDIS_TIMEOUT_MS = env_int("RATELIMIT_REDIS_TIMEOUT_MS", 500, minimum=1)
PRIORITY_SATURATION_THRESHOLD = env_float("PRIORITY_SATURATION_THRESHOLD", 0.8, minimum=0)
# A concurrency slot is a lease of this length that the worker serving the request renews every
# RATELIMIT_SLOT_RENEW_SECONDS (one call for all its slots), so a request of any length keeps its slot and
# a worker that died gives its slots back within one lease. The renewal must come well inside the lease.
RATELIMIT_SLOT_TTL_SECONDS = env_float("RATELIMIT_SLOT_TTL_SECONDS", 20.0, minimum=1)
RATELIMIT_SLOT_RENEW_SECONDS = env_float(
    "RATELIMIT_SLOT_RENEW_SECONDS", min(5.0, RATELIMIT_SLOT_TTL_SECONDS / 4), minimum=0.05
)
if RATELIMIT_SLOT_RENEW_SECONDS > RATELIMIT_SLOT_TTL_SECONDS / 2:
    raise ImproperlyConfigured("RATELIMIT_SLOT_RENEW_SECONDS must be at most half of RATELIMIT_SLOT_TTL_SECONDS.")
# Session caps (iterations, budget) count for this long from the session's first call.
RATELIMIT_SESSION_TTL_SECONDS = env_float("RATELIMIT_SESSION_TTL_SECONDS", 86400.0, minimum=1)
# Overload shedding (apps/proxy/overload.py): a worker whose event loop runs this many ms behind (smoothed)
# starts answering new /v1 requests of priority-0 keys, and of keys it has not authenticated yet, with a 503
# and retry-after (all of them at twice the lag); priority p from (p + 1) times this. 0 turns it off. At 50 a
# default-priority request waits at most ~0.15 s per loop step before it is shed. See docs/operations.md.
PROXY_SHED_LOOP_LAG_MS = env_float("PROXY_SHED_LOOP_LAG_MS", 50.0, minimum=0)
# In-process key-context cache; changes are pushed through Redis, the TTL bounds staleness without it.
AUTH_CACHE_TTL_SECONDS = env_float("AUTH_CACHE_TTL_SECONDS", 30.0, minimum=0)
# The MCP gateway (/mcp, docs/mcp.md): how long a worker keeps an organization's servers and grants without a
# change notice (changes reach every worker at once through the cache invalidation), how long it reuses an
# upstream's tool list, and which browser Origins may call it (a request with any other Origin is a 403).
MCP_CATALOG_TTL_SECONDS = env_float("MCP_CATALOG_TTL_SECONDS", 30.0, minimum=0)
MCP_TOOLS_CACHE_SECONDS = env_float("MCP_TOOLS_CACHE_SECONDS", 60.0, minimum=0)
MCP_ALLOWED_ORIGINS = env_list("MCP_ALLOWED_ORIGINS")
# Lookups of keys the auth cache does not hold, per client address (apps/proxy/auth_guard.py): a lookup
# that finds no working key uses up one of AUTH_MISS_BURST, refilled at AUTH_MISS_RATE_PER_SECOND; past
# it, 429 without a database lookup. At most AUTH_LOOKUPS_PER_SOURCE lookups of one source run at once.
# AUTH_MISS_BURST=0 turns the limit off. The address is the socket peer, or per GATEWAY_TRUSTED_PROXY_COUNT.
AUTH_MISS_BURST = env_int("AUTH_MISS_BURST", 20, minimum=0)
AUTH_MISS_RATE_PER_SECOND = env_float("AUTH_MISS_RATE_PER_SECOND", 1.0, minimum=0)
AUTH_LOOKUPS_PER_SOURCE = env_int("AUTH_LOOKUPS_PER_SOURCE", 2, minimum=1)
PROXY_MAX_BODY_BYTES = env_int("PROXY_MAX_BODY_BYTES", 20 * 1024 * 1024, minimum=1024)
# A request body that stops arriving for this long is a 408 (slow or stalled uploads hold no request forever).
PROXY_BODY_IDLE_TIMEOUT_SECONDS = env_float("PROXY_BODY_IDLE_TIMEOUT_SECONDS", 30.0, minimum=0.1)
PROXY_UPSTREAM_TIMEOUT_SECONDS = env_float("PROXY_UPSTREAM_TIMEOUT_SECONDS", 600.0, minimum=0.1)
# The cyclic GC's youngest-generation threshold for serving processes (CPython's default is 700). A /v1
# request allocates a few hundred containers, nearly all freed by reference counting; at 700 a young
# collection ran every request or two. 10,000 gave ~10 % more req/s on one core at the same RSS.
GC_GEN0_THRESHOLD = env_int("GC_GEN0_THRESHOLD", 10_000, minimum=100)
PROXY_NUM_RETRIES = env_int("PROXY_NUM_RETRIES", 2, minimum=0)
# Largest upstream answer (decoded) or single stream event the gateway holds in memory; larger is a 502.
PROXY_MAX_RESPONSE_BYTES = env_int("PROXY_MAX_RESPONSE_BYTES", 128 * 1024 * 1024, minimum=1024)
# /v1/realtime: the longest a WebSocket session may last; the gateway then closes it (code 1008, an
# ``error`` event with code "session_expired" first). Upstreams cap sessions too (OpenAI: 60 minutes).
PROXY_REALTIME_MAX_SESSION_SECONDS = env_float("PROXY_REALTIME_MAX_SESSION_SECONDS", 1800.0, minimum=1.0)
# The largest WebSocket message relayed in either direction (an audio append of a few seconds is ~100 KB).
PROXY_REALTIME_MAX_MESSAGE_BYTES = env_int("PROXY_REALTIME_MAX_MESSAGE_BYTES", 16 * 1024 * 1024, minimum=1024)
# Allow deployments on loopback/private addresses (self-hosted models). Link-local/metadata never.
PROXY_ALLOW_PRIVATE_UPSTREAMS = env_bool("PROXY_ALLOW_PRIVATE_UPSTREAMS", True)
# Response cache (docs/caching.md), opt-in per key or team (cache_ttl_seconds). "auto": Redis when the gateway
# has one (shared by every worker), else an LRU in each worker's memory; "memory" forces the LRU.
PROXY_CACHE_BACKEND = env_choice("PROXY_CACHE_BACKEND", "auto", ("auto", "memory", "redis"))
# Answers larger than this (bytes of JSON) are not cached; the memory backend holds at most MEMORY_MAX_BYTES.
PROXY_CACHE_MAX_ENTRY_BYTES = env_int("PROXY_CACHE_MAX_ENTRY_BYTES", 1024 * 1024, minimum=1024)
PROXY_CACHE_MEMORY_MAX_BYTES = env_int("PROXY_CACHE_MEMORY_MAX_BYTES", 64 * 1024 * 1024, minimum=64 * 1024)
# A Redis cache call that takes longer is a miss (and the cache is skipped for a second).
PROXY_CACHE_REDIS_TIMEOUT_MS = env_int("PROXY_CACHE_REDIS_TIMEOUT_MS", 250, minimum=1)
# "requests": a cache hit counts against RPM, parallel-request and session-iteration limits, never against
# TPM, budgets or deployment capacity (it used no tokens, cost 0, reached no upstream); "none": hits skip the
# limiters altogether (they still appear in the ledger and the metrics).
PROXY_CACHE_HITS_COUNT_AGAINST_LIMITS = env_choice(
    "PROXY_CACHE_HITS_COUNT_AGAINST_LIMITS", "requests", ("requests", "none")
)
METRICS_TOKEN = env_str("METRICS_TOKEN", "") or ""
SPEND_LOG_RETENTION_DAYS = env_int("SPEND_LOG_RETENTION_DAYS", 90, minimum=1)
# Month partitions of the ledger (Postgres) kept ready after the current one by the spend.partitions job.
SPEND_LOG_PARTITIONS_AHEAD = env_int("SPEND_LOG_PARTITIONS_AHEAD", 3, minimum=1)
# Most rows one CSV export of the request explorer streams (/admin/spend/spendlog/export/).
SPEND_EXPORT_MAX_ROWS = env_int("SPEND_EXPORT_MAX_ROWS", 100_000, minimum=1)
# Spend outbox stream and its ingestion (apps/spend/stream.py). The cap is a safety net only: ingested
# entries are deleted; an entry pending longer than CLAIM_IDLE_MS (its worker died) is taken over.
SPEND_STREAM_MAXLEN = env_int("SPEND_STREAM_MAXLEN", 1_000_000, minimum=10_000)
# Replicas that must hold a batch of spend events before the outbox counts it as written (Redis WAIT), within
# SPEND_STREAM_REPLICA_WAIT_MS; a batch fewer acknowledged is written to the ledger from the gateway itself.
# Sentinel's failover promotes a replica: without this, what only the old master held is lost. See
# docs/operations.md (Redis Sentinel). Not on a cluster: WAIT must follow the writes on their connection,
# which a cluster client does not promise (docs/ratelimit.md, Redis Cluster, says what a failover can lose).
SPEND_STREAM_MIN_REPLICAS = env_int(
    "SPEND_STREAM_MIN_REPLICAS", 1 if REDIS_TARGET and REDIS_TARGET.is_sentinel else 0, minimum=0
)
if SPEND_STREAM_MIN_REPLICAS and REDIS_TARGET is not None and REDIS_TARGET.is_cluster:
    raise ImproperlyConfigured("SPEND_STREAM_MIN_REPLICAS (Redis WAIT) is not supported with REDIS_CLUSTER_NODES")
SPEND_STREAM_REPLICA_WAIT_MS = env_int("SPEND_STREAM_REPLICA_WAIT_MS", 1000, minimum=1)
SPEND_INGEST_BATCH_SIZE = env_int("SPEND_INGEST_BATCH_SIZE", 500, minimum=1)
SPEND_INGEST_MAX_SECONDS = env_float("SPEND_INGEST_MAX_SECONDS", 20.0, minimum=0.1)
SPEND_INGEST_CLAIM_IDLE_MS = env_int("SPEND_INGEST_CLAIM_IDLE_MS", 60_000, minimum=100)
# Without Redis: how long the in-process outbox gathers events into one database write.
SPEND_LOCAL_OUTBOX_LINGER_SECONDS = env_float("SPEND_LOCAL_OUTBOX_LINGER_SECONDS", 0.2, minimum=0)
# Without Redis there is no beat process: the outbox thread runs alerts, window roll, reports, retention.
SPEND_EMBEDDED_BEAT = env_bool("SPEND_EMBEDDED_BEAT", True)
GATEWAY_ALERT_WEBHOOK_URL = env_str("GATEWAY_ALERT_WEBHOOK_URL", "") or ""
# Called with the ledger rows each ingested batch added, after its commit (apps/spend/ingest.py).
SPEND_INGESTED_HOOKS = ["apps.sinks.dispatch.sinks_enqueue"]
# Log sinks (apps/sinks): records queued per sink in Redis at most this many (more are dropped and
# counted), a failed batch retried with backoff from SINKS_BACKOFF_SECONDS doubling up to the max, and
# dropped after SINKS_MAX_ATTEMPTS; each send times out after SINKS_TIMEOUT_SECONDS; one delivery run
# (every 2 s) sends for at most SINKS_DELIVER_MAX_SECONDS.
SINKS_QUEUE_MAX_RECORDS = env_int("SINKS_QUEUE_MAX_RECORDS", 10_000, minimum=1)
SINKS_MAX_ATTEMPTS = env_int("SINKS_MAX_ATTEMPTS", 6, minimum=1)
SINKS_BACKOFF_SECONDS = env_float("SINKS_BACKOFF_SECONDS", 2.0, minimum=0)
SINKS_BACKOFF_MAX_SECONDS = env_float("SINKS_BACKOFF_MAX_SECONDS", 300.0, minimum=0)
SINKS_TIMEOUT_SECONDS = env_float("SINKS_TIMEOUT_SECONDS", 10.0, minimum=0.1)
SINKS_DELIVER_MAX_SECONDS = env_float("SINKS_DELIVER_MAX_SECONDS", 5.0, minimum=0.1)
# Deployment health and alerts (apps/monitoring; docs/operations.md "Alerts and deployment probes").
# Probes: one 1-token chat per enabled deployment every interval, by beat (the schedule is created with
# this interval and is editable in the admin afterwards); a probe older than 3 intervals is ignored.
DEPLOYMENT_PROBE_INTERVAL_SECONDS = env_int("DEPLOYMENT_PROBE_INTERVAL_SECONDS", 300, minimum=10)
DEPLOYMENT_PROBE_CONCURRENCY = env_int("DEPLOYMENT_PROBE_CONCURRENCY", 8, minimum=1)
# Traffic health: a deployment whose failed share of at least MIN_REQUESTS recent requests reaches RATE
# is degraded (3 of 3 failed is never "ok").
DEPLOYMENT_DEGRADED_ERROR_RATE = env_float("DEPLOYMENT_DEGRADED_ERROR_RATE", 0.2, minimum=0.01)
DEPLOYMENT_DEGRADED_MIN_REQUESTS = env_int("DEPLOYMENT_DEGRADED_MIN_REQUESTS", 1, minimum=1)
# Alert rules, evaluated by beat every minute; each (rule, subject, window) is sent once.
ALERT_WINDOW_MINUTES = env_int("ALERT_WINDOW_MINUTES", 15, minimum=1)
ALERT_DEPLOYMENT_ERROR_RATE = env_float("ALERT_DEPLOYMENT_ERROR_RATE", 0.5, minimum=0.01)
ALERT_DEPLOYMENT_MIN_REQUESTS = env_int("ALERT_DEPLOYMENT_MIN_REQUESTS", 3, minimum=1)
ALERT_LIMIT_REFUSALS = env_int("ALERT_LIMIT_REFUSALS", 20, minimum=1)
ALERT_SPEND_ANOMALY_FACTOR = env_float("ALERT_SPEND_ANOMALY_FACTOR", 3.0, minimum=1.0)
ALERT_SPEND_ANOMALY_MIN_USD = env_float("ALERT_SPEND_ANOMALY_MIN_USD", 1.0, minimum=0)
ALERT_DELIVERY_TIMEOUT_SECONDS = env_float("ALERT_DELIVERY_TIMEOUT_SECONDS", 5.0, minimum=0.1)

# OpenTelemetry traces, configured by the standard variables. An endpoint set turns them on; unset, nothing
# of the SDK is imported and /v1 pays nothing. The SDK itself reads the rest as the specification says
# (OTEL_TRACES_SAMPLER/_ARG, OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_*, timeouts, TLS).
OTEL_TRACES_ENDPOINT = (
    env_str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "") or env_str("OTEL_EXPORTER_OTLP_ENDPOINT", "") or ""
).strip()
OTEL_TRACES_ENABLED = bool(OTEL_TRACES_ENDPOINT) and not env_bool("OTEL_SDK_DISABLED", False)
OTEL_TRACES_PROTOCOL = env_choice(
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    env_str("OTEL_EXPORTER_OTLP_PROTOCOL", "") or "http/protobuf",
    ("http/protobuf", "grpc"),
)
OTEL_SERVICE_NAME = env_str("OTEL_SERVICE_NAME", "") or "llm-gateway"

DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "gateway@localhost")
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
# "json": one JSON object per line with the request id (apps/common/logs.py), for log pipelines.
LOG_FORMAT = env_choice("LOG_FORMAT", "plain", ("plain", "json"))
# Repeated failures (upstream errors, cooldowns, an unreachable Redis or database) log one line per kind
# of event per this many seconds, with a count (apps/common/intervallog.py).
LOG_EVENT_INTERVAL_SECONDS = env_float("LOG_EVENT_INTERVAL_SECONDS", 10.0, minimum=0.1)
LOGGING_CONFIG = "apps.common.logs.configure"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "apps.common.logs.JsonFormatter"},
    },
    "filters": {"without_traceback": {"()": "apps.common.logs.WithoutTraceback"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
        "console_one_line": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["without_traceback"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
        # The MCP SDK's HTTP client (the /mcp gateway's upstream sessions) logs every request at INFO: one line
        # per tool call with the upstream's URL, noise at best. Its warnings and errors still show.
        "httpx2": {"level": "WARNING"},
        "httpcore2": {"level": "WARNING"},
        "mcp": {"level": "WARNING"},
        # In JSON mode uvicorn's own lines (started, errors, access log) go through the same handler, so a
        # log pipeline never meets a plain line. (Django applies this after uvicorn configured its loggers.)
        **(
            {
                name: {"handlers": ["console"], "propagate": False}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            }
            if LOG_FORMAT == "json"
            else {}
        ),
        # A bad Host header is the client's mistake (or a scanner): one line each, not a traceback.
        "django.security.DisallowedHost": {"handlers": ["console_one_line"], "propagate": False},
    },
}
# Celery's worker and beat replace the root logger's handlers with their own plain one unless told not to:
# in JSON mode they keep the handler above (Celery then only sets the level from --loglevel).
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
