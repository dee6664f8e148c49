"""A fresh worker loads its registry once, however many requests arrive meanwhile."""

from __future__ import annotations

import asyncio

from apps.proxy.registry import Group
from tests.unit.proxy_support import dep


async def test_concurrent_first_requests_wait_for_the_registry_load(monkeypatch):
    """Regression: requests arriving while a fresh worker loads its registry got 503s."""
    from apps.proxy import app as proxy_app_module
    from apps.proxy.registry import Registry

    calls = []

    def load():
        calls.append(1)
        return Registry(groups={"m": Group("m", (dep(1),))}, aliases={}, loaded_at=1e9)

    gateway = proxy_app_module.Gateway()
    gateway._registry_lock = asyncio.Lock()
    gateway.cache_sync = type("Sync", (), {"check_local": lambda self: None})()

    async def run_sync(fn, *args):
        await asyncio.sleep(0.05)
        return fn(*args)

    gateway.run_sync = run_sync
    monkeypatch.setattr(proxy_app_module, "load_registry", load)
    registries = await asyncio.gather(*(gateway.get_registry() for _ in range(20)))
    assert all(r.resolve("m") is not None for r in registries)
    assert len(calls) == 1
