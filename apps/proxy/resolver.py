"""DNS for upstream connections that refuses link-local and cloud-metadata addresses (and private ones when
``PROXY_ALLOW_PRIVATE_UPSTREAMS`` is off).

Deployment URLs are checked when written, but a host name can resolve (or be re-pointed, DNS
rebinding) to 169.254.169.254 or to an internal service later; this resolver drops such answers at
connect time. IP literals never reach a resolver (aiohttp connects to them directly); those are
checked when deployments are written and when the registry loads them.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.resolver import DefaultResolver
from django.conf import settings

from apps.proxy.errors import AddressRefused
from apps.proxy.upstreams import LINK_LOCAL_NETWORKS


def forbidden_address(host: str, *, allow_private: bool = True) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address
    if any(address in net for net in LINK_LOCAL_NETWORKS if net.version == address.version):
        return True
    # The same rule as apps.proxy.upstreams.api_base_problem applies to literal addresses when written.
    return not allow_private and (address.is_private or address.is_loopback or address.is_reserved)


class SafeResolver(DefaultResolver):
    def __init__(self, *, allow_private: bool | None = None) -> None:
        super().__init__()
        if allow_private is None:
            allow_private = settings.PROXY_ALLOW_PRIVATE_UPSTREAMS
        self.allow_private = allow_private

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        answers = await super().resolve(host, port, family)
        allowed = [a for a in answers if not forbidden_address(a["host"], allow_private=self.allow_private)]
        if not allowed:
            raise AddressRefused(f"{host} resolves only to addresses upstreams may not use; refusing to connect")
        return allowed
