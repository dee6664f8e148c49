"""The client's address, as far as it can be trusted: for the audit trail and login lockouts.

``X-Forwarded-For`` is whatever the client sent plus one entry per proxy it passed; only the
entries our own proxies appended are facts. With ``GATEWAY_TRUSTED_PROXY_COUNT = n`` the client is
the n-th entry from the right; with 0 (the embedded default, nothing in front) it is ``REMOTE_ADDR``
and the header is ignored, so nobody can forge "from where" or dodge a lockout by sending it.
"""

from __future__ import annotations

from ipaddress import ip_address

from django.conf import settings


def _valid(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(ip_address(value.strip()))
    except ValueError:
        return None


def client_ip(request) -> str | None:
    meta = getattr(request, "META", {})
    remote = _valid(meta.get("REMOTE_ADDR"))
    trusted = int(getattr(settings, "GATEWAY_TRUSTED_PROXY_COUNT", 0))
    if trusted <= 0:
        return remote
    hops = [hop.strip() for hop in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if len(hops) >= trusted:
        return _valid(hops[-trusted]) or remote
    return (_valid(hops[0]) if hops else None) or remote
