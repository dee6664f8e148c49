"""What the /v1 app sets up for the whole process when it starts."""

from __future__ import annotations

import asyncio
import gc
import inspect

from apps.proxy.app import Gateway
from apps.proxy.calls import ProxyGateway


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


def test_a_started_gateway_is_what_the_v1_flows_are_typed_against():
    """The endpoint modules take a ``ProxyGateway`` (apps/proxy/calls.py), not the class above them: the
    class must keep providing every member, with the protocol's parameters."""
    gateway = Gateway()

    async def members() -> dict[str, object]:
        await gateway.startup()
        try:
            names = set(ProxyGateway.__annotations__) | {
                n for n, v in vars(ProxyGateway).items() if not n.startswith("_") and callable(v)
            }
            return {name: getattr(gateway, name, AttributeError) for name in names}
        finally:
            await gateway.shutdown()

    before = gc.get_threshold()
    try:
        found = asyncio.run(members())
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
    assert "finish" in found and "chain" in found
    assert [name for name, value in found.items() if value is AttributeError] == []
    for name, value in found.items():
        if callable(getattr(ProxyGateway, name, None)):  # a method: the same parameters, by name
            expected = list(inspect.signature(getattr(ProxyGateway, name)).parameters)[1:]
            assert list(inspect.signature(value).parameters) == expected, name
