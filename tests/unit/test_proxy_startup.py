"""What the /v1 app sets up for the whole process when it starts."""

from __future__ import annotations

import asyncio
import gc

from apps.proxy.app import Gateway


def test_startup_applies_the_configured_young_generation_gc_threshold(settings):
    settings.GC_GEN0_THRESHOLD = 12_345
    before = gc.get_threshold()
    gateway = Gateway()

    async def cycle() -> tuple[int, int, int]:
        await gateway.startup()
        try:
            return gc.get_threshold()
        finally:
            await gateway.shutdown()

    try:
        applied = asyncio.run(cycle())
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
    assert applied == (12_345, *before[1:])
