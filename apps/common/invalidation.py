"""Tell every worker that cached key contexts are stale: "tenant configuration changed".

Generic, so it lives on the ground floor: any app's services (teams, keys, proxy, provisioning) call it
without importing each other. Services call ``publish_invalidation()`` after commit whenever a key,
team, organization, user, customer or deployment changes. Workers hold an in-process cache of immutable key contexts
(``apps.proxy.auth``); they listen on the Redis channel and also compare a Redis generation number,
so a missed pub/sub message costs at most one TTL. Without Redis (embedded mode, one process) a local
generation counter does the same job.
"""

from __future__ import annotations

import logging

from django.conf import settings

logger = logging.getLogger(__name__)

CHANNEL = "gateway:invalidate"
GENERATION_KEY = "gateway:auth-generation"

_local_generation = 0

# Bump the generation and publish, in one round trip on the generation key's master (a PUBLISH reaches
# every node of a cluster).
_BUMP_AND_PUBLISH = "redis.call('INCR', KEYS[1]) return redis.call('PUBLISH', ARGV[1], ARGV[2])"


def local_generation() -> int:
    return _local_generation


def publish_invalidation(reason: str = "") -> None:
    global _local_generation
    _local_generation += 1
    if settings.REDIS_TARGET is None:
        return
    import redis

    try:
        client = settings.REDIS_TARGET.client(socket_timeout=2, socket_connect_timeout=2)
        # One script, not a pipeline: a cluster pipeline refuses PUBLISH (it has no key to route by).
        client.eval(_BUMP_AND_PUBLISH, 1, GENERATION_KEY, CHANNEL, reason or "change")
        client.close()
    except (redis.RedisError, redis.exceptions.RedisClusterException):  # (no cluster node answered)
        # Workers still expire their cache within AUTH_CACHE_TTL_SECONDS; say so loudly.
        logger.error("could not publish auth-cache invalidation (%s); workers catch up within the TTL", reason)
