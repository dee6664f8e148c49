"""Helpers shared by the proxy's unit tests (not a test module)."""

from __future__ import annotations

from apps.proxy.registry import Deployment


def dep(id: int, **kw) -> Deployment:
    return Deployment(**{"id": id, "model_name": "m", "provider": "openai", "model": f"up{id}", **kw})
