"""MCP servers and their team grants in config files: the schema, applying and exporting.

An organization's ``mcp_servers`` name its servers; each lists the ``grants`` of its teams (key grants are
managed in the admin and the API: keys are not in config files, and applying never touches them).
Header values are references, ``os.environ/NAME``, resolved when the file is applied and kept (the names,
never the values) so an export writes the same references back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from apps.mcp.models import McpGrant, McpServer, Transport
from apps.mcp.services import (
    mcp_grant_create,
    mcp_grant_delete,
    mcp_grant_update,
    mcp_server_create,
    mcp_server_delete,
    mcp_server_update,
)
from apps.provisioning.document import Document, path_label, secret_ref_name
from apps.provisioning.fields import changed_values, exported_value, non_default, shown
from apps.teams.audit import Actor
from apps.teams.models import Organization, Team


class _Applier(Protocol):
    """What of ``apps.provisioning.services._Applier`` this module uses (it calls in here: no import back)."""

    doc: Document
    environ: Mapping[str, str]
    actor: Actor
    prune: bool

    def _call(self, path: tuple, fn: Callable, **kwargs) -> Any: ...

    def _record(self, op: str, kind: str, label: str, details: tuple[str, ...] = ()) -> None: ...


SERVER_DEFAULTS = {
    "transport": Transport.STREAMABLE_HTTP.value,
    "url": "",
    "command": "",
    "args": [],
    "price_per_call": None,
    "tool_prices": {},
    "timeout_seconds": 60.0,
    "enabled": True,
}
GRANT_DEFAULTS = {"all_tools": False, "tools": [], "tool_calls_per_minute": None, "max_parallel_tool_calls": None}


def _server_values(item: dict) -> dict:
    values = {name: item.get(name, default) for name, default in SERVER_DEFAULTS.items()}
    if values["price_per_call"] is not None:
        values["price_per_call"] = Decimal(str(values["price_per_call"]))
    values["tool_prices"] = {k: str(v) for k, v in values["tool_prices"].items()}
    return values


def mcp_items(data: dict):
    for o, org in enumerate(data.get("organizations", [])):
        for s, item in enumerate(org.get("mcp_servers", [])):
            yield ("organizations", o, "mcp_servers", s), org["name"], item


def mcp_secret_problems(applier: _Applier) -> list[tuple]:
    """References to unset variables, unless stored from that same reference before (the value stays)."""
    problems = []
    for path, org_name, item in mcp_items(applier.doc.data):
        stored = McpServer.objects.filter(organization__name=org_name, name=item["name"]).first()
        for header, reference in (item.get("headers") or {}).items():
            if secret_ref_name(reference) in applier.environ:
                continue
            if stored is not None and stored.headers_ref.get(header) == reference:
                continue
            where = (*path, "headers", header)
            problems.append(
                (applier.doc.filename, applier.doc.line(where), path_label(where),
                 f"environment variable {secret_ref_name(reference)} is not set.")
            )  # fmt: skip
    return problems


def _headers(applier: _Applier, item: dict, found: McpServer | None) -> tuple[dict | None, dict, tuple]:
    """(headers to store or None to keep, references, diff lines)."""
    refs = dict(item.get("headers") or {})
    unresolved = [h for h, r in refs.items() if secret_ref_name(r) not in applier.environ]
    if found is not None and unresolved and found.headers_ref == refs:
        return None, refs, ()  # variables unset, stored from these same references: the stored values stay
    values = {h: applier.environ[secret_ref_name(r)] for h, r in refs.items()}
    if found is None:
        return values, refs, tuple(f"headers.{h}: {r}" for h, r in refs.items())
    if found.headers_ref == refs and found.get_headers() == values:
        return None, refs, ()
    return values, refs, (f"headers: {sorted(found.headers_ref) or 'none'} -> {sorted(refs) or 'none'}",)


def mcp_apply(applier: _Applier, path: tuple, org: Organization, items: list | None, teams: dict[str, Team]) -> None:
    named = set()
    for s, item in enumerate(items or []):
        where = (*path, s)
        named.add(item["name"])
        label = f"{org.name}/{item['name']}"
        desired = _server_values(item)
        found = McpServer.objects.filter(organization=org, name=item["name"]).first()
        headers, refs, details = _headers(applier, item, found)
        if found is None:
            values = {k: v for k, v in desired.items() if v != SERVER_DEFAULTS[k]}
            found = applier._call(
                where, mcp_server_create, actor=applier.actor, organization=org, name=item["name"],
                headers=headers, headers_ref=refs, **values,
            )  # fmt: skip
            applier._record("+", "mcp server", label, tuple(f"{k}: {shown(v)}" for k, v in values.items()) + details)
        else:
            changed = changed_values(found, desired)
            if changed or headers is not None:
                lines = tuple(f"{k}: {shown(getattr(found, k))} -> {shown(v)}" for k, v in changed.items())
                applier._record("~", "mcp server", label, lines + details)
                applier._call(
                    where, mcp_server_update, actor=applier.actor, server=found, headers=headers,
                    headers_ref=refs if headers is not None else None, **changed,
                )  # fmt: skip
        _grants(applier, (*where, "grants"), found, item.get("grants"), teams, label)
    if applier.prune:
        for server in McpServer.objects.filter(organization=org).exclude(name__in=named):
            applier._record("-", "mcp server", f"{org.name}/{server.name}")
            applier._call(path, mcp_server_delete, actor=applier.actor, server=server)


def _grants(applier: _Applier, path: tuple, server: McpServer, items: list | None, teams: dict, label: str) -> None:
    granted = set()
    for g, item in enumerate(items or []):
        team = (
            teams.get(item["team"]) or Team.objects.filter(organization=server.organization, name=item["team"]).first()
        )
        if team is None:
            raise applier.doc.error((*path, g, "team"), f"no team {item['team']!r} in this organization.")
        granted.add(team.pk)
        desired = {name: item.get(name, default) for name, default in GRANT_DEFAULTS.items()}
        grant = McpGrant.objects.filter(server=server, team=team).first()
        if grant is None:
            values = {k: v for k, v in desired.items() if v != GRANT_DEFAULTS[k]}
            applier._call((*path, g), mcp_grant_create, actor=applier.actor, server=server, team=team, **values)
            applier._record(
                "+", "mcp grant", f"{label} for {team.name}", tuple(f"{k}: {shown(v)}" for k, v in values.items())
            )
            continue
        changed = changed_values(grant, desired)
        if changed:
            lines = tuple(f"{k}: {shown(getattr(grant, k))} -> {shown(v)}" for k, v in changed.items())
            applier._record("~", "mcp grant", f"{label} for {team.name}", lines)
            applier._call((*path, g), mcp_grant_update, actor=applier.actor, grant=grant, **changed)
    if applier.prune:
        for grant in McpGrant.objects.filter(server=server, team__isnull=False).exclude(team_id__in=granted):
            applier._record("-", "mcp grant", f"{label} for {grant.team}")
            applier._call(path, mcp_grant_delete, actor=applier.actor, grant=grant)


def mcp_export(org: Organization, unset: list[str]) -> list[dict]:
    """The organization's servers and team grants; headers typed in the admin get a variable named after them."""
    out = []
    for server in McpServer.objects.filter(organization=org).order_by("name"):
        item: dict = {"name": server.name} | non_default(server, SERVER_DEFAULTS)
        if "tool_prices" in item:
            item["tool_prices"] = {k: exported_value(Decimal(str(v))) for k, v in server.tool_prices.items()}
        if server.has_headers:
            refs = dict(server.headers_ref)
            for header in server.get_headers():
                if header not in refs:
                    refs[header] = f"os.environ/MCP_{server.pk}_{header.upper().replace('-', '_')}"
                    unset.append(refs[header])
            item["headers"] = refs
        grants = [
            {"team": grant.team.name} | non_default(grant, GRANT_DEFAULTS)
            for grant in McpGrant.objects.filter(server=server, team__isnull=False).select_related("team")
        ]
        if grants:
            item["grants"] = sorted(grants, key=lambda g: g["team"])
        out.append(item)
    return out
