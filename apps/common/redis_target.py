"""Where the gateway's Redis is: the one place that turns configuration into a connection target.

Every Redis client of the gateway (the limiter's RESP client, the spend outbox and its ingestion, the
auth-cache and cooldown sync, invalidation, health, the channel layer, Celery's broker, Django's cache)
is built from one ``RedisTarget``, read once from the environment by the settings
(``settings.REDIS_TARGET``; ``None`` = no Redis, the embedded default). Three shapes:

- ``REDIS_URL=redis://[user:password@]host:port/db`` (also ``rediss://``, ``unix://``): one server;
- ``REDIS_SENTINELS=host:port,host:port,...`` + ``REDIS_SENTINEL_MASTER=name`` (optional
  ``REDIS_PASSWORD``/``REDIS_USERNAME`` for the master, ``REDIS_SENTINEL_PASSWORD`` for the sentinels,
  ``REDIS_DB``): the master is whatever the sentinels name *now*. Clients ask the sentinels on every
  (re)connect, so after a failover they follow the new master (see docs/operations.md, Redis Sentinel).
- ``REDIS_CLUSTER_NODES=host:port,...`` (some of a Redis Cluster's nodes; ``REDIS_PASSWORD``/
  ``REDIS_USERNAME``, ``REDIS_CLUSTER_TLS``): the limiter, the spend stream and its ingestion, the sync
  channels, invalidation and health use the cluster. Celery's broker, the channel layer and Django's
  cache cannot (kombu, channels_redis and Django's RedisCache do not speak Cluster): they stay on
  ``REDIS_URL`` (or the sentinels), which a cluster therefore needs too. That second target is
  ``settings.REDIS_BROKER_TARGET`` (the same as ``REDIS_TARGET`` without a cluster).

Why one place: a client that read ``REDIS_URL`` by itself would keep talking to a demoted master after
a failover; here there is no second way to spell a connection. redis-py is imported inside the
factories on purpose: an embedded gateway (no Redis) never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from django.core.exceptions import ImproperlyConfigured

from gateway_project.env import env_bool, env_int, env_list, env_str

URL_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_CLUSTER_PORT = 6379
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
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    tls: bool = False  # cluster nodes only (a URL says rediss://)

    @classmethod
    def from_url(cls, url: str) -> RedisTarget:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in URL_SCHEMES:
            raise ImproperlyConfigured(f"REDIS_URL must start with redis://, rediss:// or unix:// (not {scheme!r})")
        return cls(url=url)

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    @property
    def is_cluster(self) -> bool:
        return bool(self.cluster_nodes)

    def __str__(self) -> str:
        """For logs and errors: never the password."""
        if self.is_cluster:
            return "cluster via " + ",".join(f"{host}:{port}" for host, port in self.cluster_nodes)
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

    def _cluster_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"username": self.username, "password": self.password, "ssl": self.tls, **options}

    def client(self, **options: Any):
        """A synchronous ``redis.Redis`` on the (current) master; ``options`` are redis-py connection options.

        On a cluster a ``redis.cluster.RedisCluster``: commands go to their key's master, redirects followed.
        """
        if self.is_cluster:
            from redis.cluster import ClusterNode, RedisCluster  # only with Redis Cluster configured

            nodes = [ClusterNode(host, port) for host, port in self.cluster_nodes]
            return RedisCluster(startup_nodes=nodes, **self._cluster_kwargs(options))
        if not self.is_sentinel:
            import redis  # only with Redis configured

            return redis.Redis.from_url(self.url, **options)
        from redis.sentinel import Sentinel  # only with Redis Sentinel configured

        sentinel = Sentinel(list(self.sentinels), sentinel_kwargs=self._sentinel_kwargs(options))
        return sentinel.master_for(self.master, **self._master_kwargs(options))

    def async_client(self, **options: Any):
        """A ``redis.asyncio.Redis`` on the (current) master: it asks the sentinels again on every reconnect.

        On a cluster a ``redis.asyncio.cluster.RedisCluster`` (its pub/sub listens on one node: a PUBLISH
        reaches every node of a cluster).
        """
        if self.is_cluster:
            from redis.asyncio.cluster import ClusterNode, RedisCluster  # only with Redis Cluster configured

            nodes = [ClusterNode(host, port) for host, port in self.cluster_nodes]
            return RedisCluster(startup_nodes=nodes, **self._cluster_kwargs(options))
        if not self.is_sentinel:
            import redis.asyncio as aioredis  # only with Redis configured

            return aioredis.Redis.from_url(self.url, **options)
        from redis.asyncio.sentinel import Sentinel  # only with Redis Sentinel configured

        sentinel = Sentinel(list(self.sentinels), sentinel_kwargs=self._sentinel_kwargs(options))
        return sentinel.master_for(self.master, **self._master_kwargs(options))

    # --- the other libraries' configuration --------------------------------------------------------
    def celery_broker(self) -> tuple[str, dict[str, Any]]:
        """Celery's ``broker_url`` and ``broker_transport_options`` (kombu's sentinel:// transport)."""
        self._not_a_cluster("Celery's broker")
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
        self._not_a_cluster("the channel layer")
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

    def _not_a_cluster(self, what: str) -> None:
        if self.is_cluster:
            raise ImproperlyConfigured(f"{what} cannot use a Redis Cluster: give it REDIS_URL or REDIS_SENTINELS")


def redis_target(value: RedisTarget | str | None) -> RedisTarget | None:
    """A target from what a caller holds: a target, a URL (tests, benchmarks), or ""/None for no Redis."""
    if isinstance(value, RedisTarget) or value is None:
        return value
    return RedisTarget.from_url(value) if value else None


def redis_targets_from_env() -> tuple[RedisTarget | None, RedisTarget | None]:
    """``(REDIS_TARGET, REDIS_BROKER_TARGET)``, read once by the settings (see the module docstring).

    Without ``REDIS_CLUSTER_NODES`` both are the one target of ``redis_target_from_env()``. With it, the
    first is the cluster and the second the server that the libraries without Cluster support use.
    """
    server = redis_target_from_env()
    nodes = env_list("REDIS_CLUSTER_NODES")
    if not nodes:
        return server, server
    if server is None:
        raise ImproperlyConfigured(
            "REDIS_CLUSTER_NODES needs REDIS_URL (or REDIS_SENTINELS) as well: Celery's broker, the channel "
            "layer and Django's cache cannot use a Redis Cluster"
        )
    cluster = RedisTarget(
        cluster_nodes=parse_hosts(nodes, name="REDIS_CLUSTER_NODES", default_port=DEFAULT_CLUSTER_PORT),
        username=env_str("REDIS_USERNAME") or None,
        password=env_str("REDIS_PASSWORD") or None,
        tls=env_bool("REDIS_CLUSTER_TLS", False),
    )
    return cluster, server


def redis_target_from_env() -> RedisTarget | None:
    """One server or sentinels. Both a URL and sentinels set is a config error: which one is meant?"""
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
