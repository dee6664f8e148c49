"""The live traffic websocket: the admin session decides which tenant groups a browser joins."""

from __future__ import annotations

from collections import OrderedDict

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.spend.live import ALL_GROUP, org_group, team_group, user_group
from apps.teams.scoping import UserTenancy, tenancy_for

SEEN_MAX = 2000
CLOSE_FORBIDDEN = 4403


def live_groups_for(tenancy: UserTenancy) -> list[str]:
    """The same rules as ``tenant_q`` for request rows (paths organization, team, owner=user)."""
    if tenancy.is_superuser:
        return [ALL_GROUP]
    groups = [org_group(org_id) for org_id in sorted(tenancy.org_view)]
    groups += [team_group(team_id) for team_id in sorted(tenancy.team_admin)]
    if tenancy.user_id is not None:
        groups.append(user_group(tenancy.user_id))
    return groups


def _session_tenancy(user) -> UserTenancy | None:
    if not getattr(user, "is_authenticated", False) or not user.is_active or not user.is_staff:
        return None
    return tenancy_for(user)


class LiveTrafficConsumer(AsyncJsonWebsocketConsumer):
    """Pushes finished requests to the live page. Read-only: messages from the browser are ignored."""

    groups_joined: list[str]

    async def connect(self) -> None:
        self.groups_joined = []
        self.seen: OrderedDict[str, None] = OrderedDict()
        tenancy = await database_sync_to_async(_session_tenancy)(self.scope.get("user"))
        if tenancy is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        for group in live_groups_for(tenancy):
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)
        await self.accept()
        await self.send_json({"type": "hello", "groups": len(self.groups_joined)})

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        return None

    async def live_rows(self, message: dict) -> None:
        # A user in both an organization group and a team group gets each row twice: send it once.
        fresh = []
        for row in message.get("rows", []):
            request_id = row.get("request_id")
            if request_id in self.seen:
                continue
            self.seen[request_id] = None
            if len(self.seen) > SEEN_MAX:
                self.seen.popitem(last=False)
            fresh.append({k: v for k, v in row.items() if k not in ("organization_id", "user_id")})
        if fresh:
            await self.send_json({"type": "rows", "rows": fresh})
