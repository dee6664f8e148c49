"""Cache invalidation inside one process, without Redis."""

from __future__ import annotations


def test_same_process_changes_clear_the_caches_without_redis(settings):
    """Embedded default: the admin runs in the proxy's process; its writes bump a local generation."""
    from apps.common.invalidation import publish_invalidation
    from apps.proxy.cache_sync import CacheSync

    settings.REDIS_TARGET = None
    changes: list[str] = []
    sync = CacheSync(redis="", on_change=changes.append)
    sync.check_local()
    assert changes == []
    publish_invalidation("key:1")
    sync.check_local()
    sync.check_local()
    assert changes == ["local"]
