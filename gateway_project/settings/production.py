"""Production: Postgres and Redis required, secrets from the environment, passes check --deploy.

Everything production needs is checked before anything else is read, and every missing or weak
variable is reported in one message on stderr (exit status 3, no traceback) by whichever process
imports these settings: ``manage.py``, uvicorn (its ``--workers`` supervisor stops on that status
instead of restarting workers), ``celery worker|beat``. base.py is imported only once the check has
passed, so production never falls back to the embedded SQLite file or writes generated secrets
into ``.run/``.
"""

from django.core.exceptions import ImproperlyConfigured

from gateway_project.env import (
    POSTGRES_SCHEMES,
    REDIS_SCHEMES,
    EnvProblems,
    env_bool,
    env_int,
    env_list,
    env_str,
)

_SETTINGS_MODULE = "gateway_project.settings.production"
_env = EnvProblems()
_env.url(
    "DATABASE_URL",
    schemes=POSTGRES_SCHEMES,
    example="postgres://gateway:PASSWORD@db:5432/gateway",
    why=" (production has no SQLite fallback)",
)
# Redis: one server (REDIS_URL) or a Sentinel-monitored master (REDIS_SENTINELS + REDIS_SENTINEL_MASTER).
if env_list("REDIS_SENTINELS"):
    _env.required("REDIS_SENTINEL_MASTER", example="mymaster")
else:
    _env.url(
        "REDIS_URL", schemes=REDIS_SCHEMES, example="redis://redis:6379/0 (or REDIS_SENTINELS + REDIS_SENTINEL_MASTER)"
    )
# Django's own deploy check (security.W009) wants 50 characters for the Django secret.
_django_secret = _env.secret("DJANGO_SECRET_KEY", min_length=50)
_gateway_secret = _env.secret("GATEWAY_SECRET_KEY")
_master_key = _env.secret("GATEWAY_MASTER_KEY")
_allowed_hosts = _env.listed("DJANGO_ALLOWED_HOSTS", example="gw.example.com")
# /metrics shows every tenant's team names, key aliases, private model names, spend and remaining
# limits: in production it always needs a bearer that only the platform operator's scraper holds.
_metrics_token = _env.secret("METRICS_TOKEN")
if _metrics_token and _metrics_token == _master_key:
    _env.add("METRICS_TOKEN equals GATEWAY_MASTER_KEY; the scraper must not hold the master key")
# Single sign-on in production: the provider over TLS, and a confidential client (its secret set).
_oidc_issuer = (env_str("OIDC_ISSUER") or "").strip()
if _oidc_issuer and not _oidc_issuer.startswith("https://"):
    _env.add(f"OIDC_ISSUER={_oidc_issuer!r} must be an https:// URL in production")
if _oidc_issuer and not (env_str("OIDC_CLIENT_SECRET") or "").strip():
    _env.add("OIDC_ISSUER is set: OIDC_CLIENT_SECRET is required (the gateway is a confidential client)")
_env.exit_if_any(_SETTINGS_MODULE)

try:
    from .base import *  # noqa: F403
except ImproperlyConfigured as exc:  # a malformed typed value (DEBUG=maybe, PORT=abc, ...)
    _env.add(str(exc))
    _env.exit_if_any(_SETTINGS_MODULE)

DEBUG = False
SECRET_KEY = _django_secret
GATEWAY_SECRET_KEY = _gateway_secret
GATEWAY_MASTER_KEY = _master_key
ALLOWED_HOSTS = _allowed_hosts
METRICS_TOKEN = _metrics_token

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
GATEWAY_TRUSTED_PROXY_COUNT = env_int("GATEWAY_TRUSTED_PROXY_COUNT", 1, minimum=0)  # lockouts, audit "from where"
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
# Load balancers probe health over plain HTTP (gateway_project.health answers those before the
# redirect anyway); the hot path is served by the proxy app, not Django.
SECURE_REDIRECT_EXEMPT = [r"^health/", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# base.py built the broker and the channel layer from REDIS_TARGET (set: checked above).
CELERY_TASK_ALWAYS_EAGER = False
CACHES = {"default": {"BACKEND": "apps.common.redis_cache.TargetRedisCache"}}
