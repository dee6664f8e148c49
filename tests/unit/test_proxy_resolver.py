"""The upstream DNS resolver refuses link-local and cloud metadata addresses."""

from __future__ import annotations

import pytest


async def test_resolver_drops_link_local_and_metadata_answers(monkeypatch):
    from aiohttp.resolver import DefaultResolver

    from apps.proxy.resolver import SafeResolver, forbidden_address

    answers = {
        "rebinding.example": ["169.254.169.254"],
        "mixed.example": ["169.254.1.1", "10.0.0.5"],
        "v6-metadata.example": ["fd00:ec2::254"],
    }

    async def fake_resolve(self, host, port=0, family=0):
        return [
            {"hostname": host, "host": ip, "port": port, "family": family, "proto": 0, "flags": 0}
            for ip in answers[host]
        ]

    monkeypatch.setattr(DefaultResolver, "resolve", fake_resolve)
    resolver = SafeResolver()
    assert [a["host"] for a in await resolver.resolve("mixed.example", 80)] == ["10.0.0.5"]
    for host in ("rebinding.example", "v6-metadata.example"):
        with pytest.raises(OSError):
            await resolver.resolve(host, 80)
    assert forbidden_address("::ffff:169.254.169.254") and not forbidden_address("127.0.0.1")
