"""Where the gateway's Redis is: the one place that turns configuration into a connection target.

Every Redis client of the gateway (the limiter's RESP client, the spend outbox and its ingestion, the
auth-cache and cooldown sync, invalidation, health, the channel layer, Celery's broker, Django's cache)
is built from one ``RedisTarget``, read once from the environment by the settings
(``settings.REDIS_TARGET``; ``None`` = no Redis, the embedded default). Two shapes:

- ``REDIS_URL=redis://[user:password@]host:port/db`` (also ``rediss://``, ``unix://``): one server;
- ``REDIS_SENTINELS=host:port,host:port,...`` + ``REDIS_SENTINEL_MASTER=name`` (optional
  ``REDIS_PASSWORD``/``REDIS_USERNAME`` for the master, ``REDIS_SENTINEL_PASSWORD`` for the sentinels,
  ``REDIS_DB``): the master is whatever the sentinels name *now*. Clients ask the sentinels on every
  (re)connect, so after a failover they follow the new master (see docs/operations.md, Redis Sentinel).

Why one place: a client that read ``REDIS_URL`` by itself would keep talking to a demoted master after
a failover; here there is no second way to spell a connection. redis-py is imported inside the
factories on purpose: an embedded gateway (no Redis) never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from gateway_project.env import env_int, env_list, env_str

URL_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_SENTINEL_PORT = 26379
# How long one sentinel may take to answer "who is the master" before the next one is asked.
SENTINEL_TIMEOUT_SECONDS = 1.0


def parse_hosts(raw: list[str], *, name: str, default_port: int) -> tuple[tuple[str, int], ...]:
    """``host:port`` items (``[v6]:port`` too) as (host, port) pairs; a malformed item is a config error."""
    hosts = []
    for item in raw:
        if item.startswith("["):  # [::1]:26379
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, sep, port = item.rpartition(":")
            host, port = (host, port) if sep else (item, "")
        if not host:
            raise ImproperlyConfigured(f"{name}: {item!r} is not host:port")
        try:
            number = int(port) if port else default_port
        except ValueError:
            raise ImproperlyConfigured(f"{name}: {item!r} has a port that is not a number") from None
        if not 0 < number < 65536:
            raise ImproperlyConfigured(f"{name}: {item!r} has a port outside 1-65535")
        hosts.append((host, number))
    return tuple(hosts)


@dataclass(frozen=True)
class RedisTarget:
    """One Redis deployment: a URL, or a sentinel-monitored master. Immutable, safe to share."""

    url: str = ""
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    db: int = 0

    @classmethod
    def from_url(cls, url: str) -> RedisTarget:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in URL_SCHEMES:
            raise ImproperlyConfigured(f"REDIS_URL must start with redis://, rediss:// or unix:// (not {scheme!r})")
        return cls(url=url)

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    def __str__(self) -> str:
        """For logs and errors: never the password."""
        if self.is_sentinel:
            hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"sentinel master {self.master!r} via {hosts} db {self.db}"
        parts = urlsplit(self.url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return f"{parts.scheme}://{netloc}{parts.path}"

    # --- redis-py clients --------------------------------------------------------------------------
    def _sentinel_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        timeout = min(options.get("socket_connect_timeout") or SENTINEL_TIMEOUT_SECONDS, SENTINEL_TIMEOUT_SECONDS)
        kwargs: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        return kwargs

    def _master_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"username": self.username, "password": self.password, "db": self.db, **options}

    def client(self, **options: Any):
        """A synchronous ``redis.Redis`` on the (current) master; ``options`` are redis-py connection options."""
        if not self.is_sentinel:
            import redis  # only with Redis configured

            return redis.Redis.from_url(self.url, **options)
        from redis.sentinel import Sentinel  # only with Redis Sentinel configured

        sentinel = Sentinel(list(self.sentinels), sentinel_kwargs=self._sentinel_kwargs(options))
        return sentinel.master_for(self.master, **self._master_kwargs(options))

    def async_client(self, **options: Any):
        """A ``redis.asyncio.Redis`` on the (current) master: it asks the sentinels again on every reconnect."""
        if not self.is_sentinel:
            import redis.asyncio as aioredis  # only with Redis configured

            return aioredis.Redis.from_url(self.url, **options)
        from redis.asyncio.sentinel import Sentinel  # only with Redis Sentinel configured

        sentinel = Sentinel(list(self.sentinels), sentinel_kwargs=self._sentinel_kwargs(options))
        return sentinel.master_for(self.master, **self._master_kwargs(options))

    # --- the other libraries' configuration --------------------------------------------------------
    def celery_broker(self) -> tuple[str, dict[str, Any]]:
        """Celery's ``broker_url`` and ``broker_transport_options`` (kombu's sentinel:// transport)."""
        if not self.is_sentinel:
            return self.url, {}
        auth = ""
        if self.password:
            user = quote(self.username or "", safe="")
            auth = f"{user}:{quote(self.password, safe='')}@"
        url = ";".join(f"sentinel://{auth}{host}:{port}/{self.db}" for host, port in self.sentinels)
        options: dict[str, Any] = {"master_name": self.master}
        if self.sentinel_password:
            options["sentinel_kwargs"] = {"password": self.sentinel_password}
        return url, options

    def channel_layer_host(self) -> str | dict[str, Any]:
        """One entry of channels_redis' ``hosts``: the URL, or its sentinel form."""
        if not self.is_sentinel:
            return self.url
        host: dict[str, Any] = {"sentinels": list(self.sentinels), "master_name": self.master, "db": self.db}
        if self.password:
            host["password"] = self.password
        if self.username:
            host["username"] = self.username
        if self.sentinel_password:
            host["sentinel_kwargs"] = {"password": self.sentinel_password}
        return host


def redis_target(value: RedisTarget | str | None) -> RedisTarget | None:
    """A target from what a caller holds: a target, a URL (tests, benchmarks), or ""/None for no Redis."""
    if isinstance(value, RedisTarget) or value is None:
        return value
    return RedisTarget.from_url(value) if value else None


def redis_target_from_env() -> RedisTarget | None:
    """Read once by the settings. Both a URL and sentinels set is a config error: which one is meant?"""
    url = (env_str("REDIS_URL", "") or "").strip()
    sentinels = env_list("REDIS_SENTINELS")
    master = (env_str("REDIS_SENTINEL_MASTER", "") or "").strip()
    if not sentinels:
        if master:
            raise ImproperlyConfigured("REDIS_SENTINEL_MASTER is set without REDIS_SENTINELS (host:port,...)")
        return RedisTarget.from_url(url) if url else None
    if url:
        raise ImproperlyConfigured("set either REDIS_URL or REDIS_SENTINELS (+ REDIS_SENTINEL_MASTER), not both")
    if not master:
        raise ImproperlyConfigured("REDIS_SENTINELS needs REDIS_SENTINEL_MASTER (the monitored master's name)")
    return RedisTarget(
        sentinels=parse_hosts(sentinels, name="REDIS_SENTINELS", default_port=DEFAULT_SENTINEL_PORT),
        master=master,
        username=env_str("REDIS_USERNAME") or None,
        password=env_str("REDIS_PASSWORD") or None,
        sentinel_password=env_str("REDIS_SENTINEL_PASSWORD") or None,
        db=env_int("REDIS_DB", 0, minimum=0),
    )
