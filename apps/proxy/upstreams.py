"""Which upstreams and deployment fields are safe to serve: rules both the writes and the registry apply.

The services (``apps.proxy.services``) refuse a bad deployment when it is written; the registry
(``apps.proxy.registry``, proxy core) skips rows written before a rule existed; the resolver applies the
address rule again at connect time. Living here, below all three, the registry never imports the
services above it.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from urllib.parse import urlsplit

from django.conf import settings

# Cloud metadata endpoints hand out the machine's own credentials: never a deployment target.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data"})
LINK_LOCAL_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)


# Fields that end up in a response header (``x-gateway-deployment``) and in log lines: a CR/LF there makes
# the server refuse the whole response, so every answer through the deployment would be a closed connection.
HEADER_SAFE_FIELDS = ("model_name", "model", "api_version", "region")


def control_character_problem(value: object) -> str | None:
    """Why ``value`` may not be a deployment's name/model/version/region, or None when it may."""
    if isinstance(value, str) and any(unicodedata.category(ch) == "Cc" for ch in value):
        return "must not contain control characters (line breaks, tabs, NUL...)."
    return None


def api_base_problem(api_base: str, *, allow_private: bool | None = None) -> str | None:
    """Why ``api_base`` may not be used as an upstream, or None when it may.

    Literal addresses are checked; names are not resolved here (no DNS at validation time),
    so the known metadata host names are refused by name.
    """
    if not api_base:
        return None
    allow_private = settings.PROXY_ALLOW_PRIVATE_UPSTREAMS if allow_private is None else allow_private
    try:
        parts = urlsplit(api_base)
        hostname, _port = parts.hostname, parts.port  # both raise on "http://[::1" or a port out of range
    except ValueError:
        return "must be a well-formed http(s) URL."
    if parts.scheme not in ("http", "https") or not hostname:
        return "must be an http(s) URL with a host."
    if parts.username or parts.password:
        return "must not carry credentials; use api_key."
    host = hostname.rstrip(".").lower()
    if host in METADATA_HOSTS:
        return "cloud metadata endpoints are not allowed."
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    address = mapped or address
    if any(address in network for network in LINK_LOCAL_NETWORKS if network.version == address.version):
        return "link-local and metadata addresses are not allowed."
    if not allow_private and (address.is_private or address.is_loopback or address.is_reserved):
        return "private addresses are not allowed (PROXY_ALLOW_PRIVATE_UPSTREAMS is off)."
    return None
