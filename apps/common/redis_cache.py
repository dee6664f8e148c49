"""Django's Redis cache on ``settings.REDIS_BROKER_TARGET``: the server, or the sentinels' current master.

Django's own ``RedisCache`` builds its pools from URLs, which cannot follow a Sentinel failover; this
subclass keeps Django's cache semantics (serializer, timeouts, keys) and only swaps where the
connection comes from, so the cache moves to the new master with every other Redis client. Never a
cluster (``REDIS_BROKER_TARGET``): ``delete_many``/``get_many`` span keys of different slots.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class TargetRedisCacheClient(RedisCacheClient):
    def __init__(self, servers: list[str], **options: Any) -> None:
        super().__init__(servers, **options)
        self._target_client = None

    def get_client(self, key: Any = None, *, write: bool = False):
        if self._target_client is None:
            self._target_client = settings.REDIS_BROKER_TARGET.client(socket_timeout=2.0, socket_connect_timeout=2.0)
        return self._target_client


class TargetRedisCache(RedisCache):
    """``CACHES["default"]["BACKEND"]`` in production; ``LOCATION`` is not used (the target says where)."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server or "", params)
        self._class = TargetRedisCacheClient
