"""DNS for upstream connections that refuses link-local and cloud-metadata addresses.

Deployment URLs are checked when written, but a host name can resolve (or be re-pointed, DNS
rebinding) to 169.254.169.254 later; this resolver drops such answers at connect time. IP literals
never reach a resolver (aiohttp connects to them directly); those are checked when deployments are
written and when the registry loads them.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.resolver import DefaultResolver

from apps.proxy.services import LINK_LOCAL_NETWORKS


def forbidden_address(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address
    return any(address in net for net in LINK_LOCAL_NETWORKS if net.version == address.version)


class SafeResolver(DefaultResolver):
    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        answers = await super().resolve(host, port, family)
        allowed = [a for a in answers if not forbidden_address(a["host"])]
        if not allowed:
            raise OSError(f"{host} resolves only to link-local or metadata addresses; refusing to connect")
        return allowed
