"""What the /mcp gateway knows about an organization's servers and grants: an immutable snapshot per
organization, loaded on a miss (on the proxy's database threads), dropped on every tenant-configuration
change (the proxy's cache invalidation) and after ``MCP_CATALOG_TTL_SECONDS`` as a safety net.

Nothing here touches the database in the steady state; ``access_for`` answers from the snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from apps.mcp.models import TOOL_SEPARATOR, McpGrant, McpServer
from apps.proxy.context import KeyContext


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """One upstream as the pool connects to it. ``version`` changes with every edit (a new connection)."""

    id: int
    organization_id: int
    name: str
    transport: str
    url: str
    command: str
    args: tuple[str, ...]
    headers: dict[str, str] = field(repr=False)  # decrypted credentials: never logged (repr=False)
    price_per_call: Decimal | None
    tool_prices: dict[str, Decimal]
    timeout_seconds: float
    version: str

    def price_of(self, tool: str) -> Decimal:
        price = self.tool_prices.get(tool, self.price_per_call)
        return price if price is not None else Decimal(0)


@dataclass(frozen=True, slots=True)
class GrantSpec:
    server_id: int
    scope: str  # "team" or "key": which counter its limits use
    holder_id: int
    all_tools: bool
    tools: frozenset[str]
    tool_calls_per_minute: int | None
    max_parallel_tool_calls: int | None

    def allows(self, tool: str) -> bool:
        return self.all_tools or tool in self.tools


@dataclass(frozen=True, slots=True)
class Access:
    """One server as one key may use it: the tools it may call, the grants whose limits a call passes."""

    server: ServerSpec
    grants: tuple[GrantSpec, ...]  # the team's, then the key's own (if any)

    def allows(self, tool: str) -> bool:
        return all(grant.allows(tool) for grant in self.grants)


@dataclass(frozen=True, slots=True)
class OrgCatalog:
    servers: dict[int, ServerSpec]
    team_grants: dict[tuple[int, int], GrantSpec]  # (team id, server id)
    key_grants: dict[tuple[int, int], GrantSpec]  # (key id, server id)
    loaded_at: float

    def access_for(self, key: KeyContext) -> dict[str, Access]:
        """The servers ``key`` may use, by name: its team's grant is the ceiling; a key's own grant narrows it."""
        found: dict[str, Access] = {}
        if key.team_id is None:
            return found
        for server in self.servers.values():
            team_grant = self.team_grants.get((key.team_id, server.id))
            if team_grant is None:
                continue
            key_grant = self.key_grants.get((key.key_id, server.id)) if key.key_id is not None else None
            grants = (team_grant,) if key_grant is None else (team_grant, key_grant)
            found[server.name] = Access(server=server, grants=grants)
        return found


def _grant_spec(grant: McpGrant) -> GrantSpec:
    scope, holder = ("team", grant.team_id) if grant.team_id is not None else ("key", grant.key_id)
    return GrantSpec(
        server_id=grant.server_id,
        scope=scope,
        holder_id=int(holder),  # type: ignore[arg-type]
        all_tools=grant.all_tools,
        tools=frozenset(str(t) for t in grant.tools or ()),
        tool_calls_per_minute=grant.tool_calls_per_minute,
        max_parallel_tool_calls=grant.max_parallel_tool_calls,
    )


def load_org_catalog(organization_id: int) -> OrgCatalog:
    """The enabled servers of one organization and their grants (ORM: the proxy's database threads only)."""
    servers: dict[int, ServerSpec] = {}
    for row in McpServer.objects.filter(organization_id=organization_id, enabled=True):
        servers[row.pk] = ServerSpec(
            id=row.pk,
            organization_id=row.organization_id,
            name=row.name,
            transport=row.transport,
            url=row.url,
            command=row.command,
            args=tuple(str(a) for a in row.args or ()),
            headers=row.get_headers(),
            price_per_call=row.price_per_call,
            tool_prices={str(k): Decimal(str(v)) for k, v in (row.tool_prices or {}).items()},
            timeout_seconds=row.timeout_seconds,
            version=row.updated_at.isoformat(),
        )
    team_grants: dict[tuple[int, int], GrantSpec] = {}
    key_grants: dict[tuple[int, int], GrantSpec] = {}
    for grant in McpGrant.objects.filter(server_id__in=list(servers)):
        spec = _grant_spec(grant)
        (team_grants if spec.scope == "team" else key_grants)[(spec.holder_id, spec.server_id)] = spec
    return OrgCatalog(servers, team_grants, key_grants, loaded_at=time.monotonic())


EMPTY = OrgCatalog({}, {}, {}, loaded_at=0.0)


class CatalogCache:
    """Per-process snapshots by organization. ``clear()`` is the proxy's invalidation hook."""

    def __init__(self, *, ttl: float, run_sync: Callable[..., Awaitable[Any]]) -> None:
        self.ttl = ttl
        self.run_sync = run_sync
        self._by_org: dict[int, OrgCatalog] = {}

    def clear(self, _reason: str = "") -> None:
        self._by_org = {}

    async def get(self, organization_id: int | None) -> OrgCatalog:
        if organization_id is None:
            return EMPTY  # the master key belongs to no organization: MCP servers are an organization's
        found = self._by_org.get(organization_id)
        if found is None or time.monotonic() - found.loaded_at > self.ttl:
            found = await self.run_sync(load_org_catalog, organization_id)
            self._by_org[organization_id] = found
        return found


def split_tool_name(name: str) -> tuple[str, str] | None:
    """``"<server>__<tool>"`` -> (server, tool); None when the name has no server part."""
    server, sep, tool = name.partition(TOOL_SEPARATOR)
    return (server, tool) if sep and server and tool else None
