"""Writes for MCP servers and grants (admin, REST API, config files). Headers go in here and never come out.

The /mcp gateway reads these rows only through its cached catalog (``catalog.py``), which every write
here invalidates after commit, like deployments and keys.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from apps.common.invalidation import publish_invalidation
from apps.keys.models import VirtualKey
from apps.mcp.models import TOOL_SEPARATOR, McpGrant, McpServer, Transport
from apps.proxy.upstreams import api_base_problem, control_character_problem
from apps.teams.audit import Actor, audit_record
from apps.teams.models import Organization, Team
from apps.teams.scoping import CHANGE, DELETE, require

SERVER_SETTABLE = (
    "name",
    "transport",
    "url",
    "command",
    "args",
    "price_per_call",
    "tool_prices",
    "timeout_seconds",
    "enabled",
)
GRANT_SETTABLE = ("all_tools", "tools", "tool_calls_per_minute", "max_parallel_tool_calls")
SERVER_REFUSAL = "You may not manage this organization's MCP servers."
STDIO_REFUSAL = "Only a superuser may register or change a stdio MCP server (it runs a command on the gateway)."
# Letters, digits, "-" and single "_": the tool separator "__" can never occur in a server's name.
NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]|_(?!_))*$")
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
MAX_TIMEOUT_SECONDS = 600.0


def _changed_on_commit(reason: str) -> None:
    transaction.on_commit(lambda: publish_invalidation(reason))


def _plain(value: object, *, empty: bool = False) -> bool:
    """A string fit for a JSON column (Postgres refuses NUL in jsonb) and for logs: no control characters."""
    return isinstance(value, str) and (empty or bool(value)) and control_character_problem(value) is None


def _price_problem(value: object) -> str | None:
    try:
        price = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return "must be a number."
    return None if price.is_finite() and price >= 0 else "must be a number >= 0."


def _validate_server(values: dict, headers: dict | None) -> None:
    unknown = set(values) - set(SERVER_SETTABLE)
    if unknown:
        raise ValidationError({name: "this field cannot be set." for name in sorted(unknown)})
    problems: dict[str, str] = {}
    name = values.get("name")
    if name is not None and (not isinstance(name, str) or not NAME_RE.match(name) or name.endswith("_")):
        problems["name"] = f"letters, digits, '-' and single '_' only (the tool separator is '{TOOL_SEPARATOR}')."
    problems["url"] = api_base_problem(values.get("url") or "") or ""
    args = values.get("args")
    if args is not None and (not isinstance(args, list) or not all(_plain(a, empty=True) for a in args)):
        problems["args"] = "must be a list of strings without control characters."
    prices = values.get("tool_prices")
    if prices is not None:
        if not isinstance(prices, dict):
            problems["tool_prices"] = "must be an object of tool name to price."
        else:
            bad = sorted(repr(tool) for tool, price in prices.items() if _price_problem(price) or not _plain(tool))
            if bad:
                problems["tool_prices"] = f"tool names to prices, numbers >= 0 (not for {', '.join(bad)[:200]})."
    timeout = values.get("timeout_seconds")
    if timeout is not None and not (0 < float(timeout) <= MAX_TIMEOUT_SECONDS):
        problems["timeout_seconds"] = f"must be above 0 and at most {MAX_TIMEOUT_SECONDS:.0f}."
    for field in ("url", "command"):
        problems[field] = problems.get(field) or control_character_problem(values.get(field)) or ""
    if headers is not None and (
        not isinstance(headers, dict)
        or not all(
            isinstance(k, str) and isinstance(v, str) and HEADER_NAME_RE.match(k) and not control_character_problem(v)
            for k, v in headers.items()
        )
    ):
        problems["headers"] = "must be an object of header names to single-line string values."
    problems = {k: v for k, v in problems.items() if v}
    if problems:
        raise ValidationError(problems)


def _check_transport(actor: Actor, server: McpServer) -> None:
    """stdio starts a process on the gateway's machine: superusers only, decided here for every interface."""
    if server.transport == Transport.STDIO:
        if not getattr(actor.user, "is_superuser", False):
            raise PermissionDenied(STDIO_REFUSAL)
        if not server.command:
            raise ValidationError({"command": "a stdio server needs a command."})
    elif not server.url:
        raise ValidationError({"url": "an HTTP server needs a URL."})


def _audited(values: dict, headers: dict | None) -> dict:
    changes = dict(values)
    if headers is not None:
        changes["headers"] = sorted(headers)  # the names only: values are credentials
    return changes


def mcp_server_create(
    *,
    actor: Actor,
    organization: Organization,
    headers: dict[str, str] | None = None,
    headers_ref: dict[str, str] | None = None,
    **values,
) -> McpServer:
    """``headers_ref`` names where each header came from (``os.environ/NAME``), kept for export; never a value."""
    require(actor.user, CHANGE, McpServer(organization=organization), message=SERVER_REFUSAL)
    _validate_server(values, headers)
    with transaction.atomic():
        server = McpServer(organization=organization, **values)
        _check_transport(actor, server)
        server.set_headers(headers or {})
        server.headers_ref = dict(headers_ref or {}) if headers else {}
        server.full_clean()
        server.save()
        audit_record(
            actor=actor,
            action="mcp_server.create",
            obj=server,
            organization=organization,
            changes=_audited(values, headers),
        )
        _changed_on_commit(f"mcp_server:{server.pk}")
    return server


def mcp_server_update(
    *,
    actor: Actor,
    server: McpServer,
    headers: dict[str, str] | None = None,
    headers_ref: dict[str, str] | None = None,
    **values,
) -> McpServer:
    """``headers`` None keeps the stored ones; {} removes them; anything else replaces them all (and takes
    ``headers_ref`` as their origin: headers typed into the admin have none)."""
    require(actor.user, CHANGE, server, message=SERVER_REFUSAL)
    _validate_server(values, headers)
    if server.transport == Transport.STDIO and not getattr(actor.user, "is_superuser", False):
        raise PermissionDenied(STDIO_REFUSAL)  # also for a stdio server turned into an HTTP one
    with transaction.atomic():
        for name, value in values.items():
            setattr(server, name, value)
        _check_transport(actor, server)
        if headers is not None:
            server.set_headers(headers)
            server.headers_ref = dict(headers_ref or {}) if headers else {}
        server.full_clean()
        server.save()
        audit_record(
            actor=actor,
            action="mcp_server.update",
            obj=server,
            organization=server.organization,
            changes=_audited(values, headers),
        )
        _changed_on_commit(f"mcp_server:{server.pk}")
    return server


def mcp_server_delete(*, actor: Actor, server: McpServer) -> None:
    require(actor.user, DELETE, server, message=SERVER_REFUSAL)
    if server.transport == Transport.STDIO and not getattr(actor.user, "is_superuser", False):
        raise PermissionDenied(STDIO_REFUSAL)
    with transaction.atomic():
        audit_record(actor=actor, action="mcp_server.delete", obj=server, organization=server.organization)
        server.delete()
        _changed_on_commit("mcp_server:deleted")


def _validate_grant(values: dict) -> None:
    unknown = set(values) - set(GRANT_SETTABLE)
    if unknown:
        raise ValidationError({name: "this field cannot be set." for name in sorted(unknown)})
    tools = values.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(_plain(t) for t in tools)):
        raise ValidationError({"tools": "must be a list of tool names (no control characters)."})


def mcp_grant_create(
    *, actor: Actor, server: McpServer, team: Team | None = None, key: VirtualKey | None = None, **values
) -> McpGrant:
    """Grant ``team`` or ``key`` (exactly one, of the server's organization) some of ``server``'s tools."""
    require(actor.user, CHANGE, server, message=SERVER_REFUSAL)
    if (team is None) == (key is None):
        raise ValidationError({"team": "name exactly one of team and key."})
    holder_org = team.organization_id if team is not None else key.organization_id  # type: ignore[union-attr]
    if holder_org != server.organization_id:
        raise ValidationError({"team" if team is not None else "key": "must belong to the server's organization."})
    _validate_grant(values)
    with transaction.atomic():
        grant = McpGrant(organization_id=server.organization_id, server=server, team=team, key=key, **values)
        grant.full_clean()
        grant.save()
        audit_record(
            actor=actor, action="mcp_grant.create", obj=grant, organization=server.organization, changes=values
        )
        _changed_on_commit(f"mcp_grant:{grant.pk}")
    return grant


def mcp_grant_update(*, actor: Actor, grant: McpGrant, **values) -> McpGrant:
    require(actor.user, CHANGE, grant, message=SERVER_REFUSAL)
    _validate_grant(values)
    with transaction.atomic():
        for name, value in values.items():
            setattr(grant, name, value)
        grant.full_clean()
        grant.save()
        audit_record(actor=actor, action="mcp_grant.update", obj=grant, organization=grant.organization, changes=values)
        _changed_on_commit(f"mcp_grant:{grant.pk}")
    return grant


def mcp_grant_delete(*, actor: Actor, grant: McpGrant) -> None:
    require(actor.user, DELETE, grant, message=SERVER_REFUSAL)
    with transaction.atomic():
        audit_record(actor=actor, action="mcp_grant.delete", obj=grant, organization=grant.organization)
        grant.delete()
        _changed_on_commit("mcp_grant:deleted")
