"""The live traffic websocket: the admin session decides which rows of the feed a browser gets.

Every finished request is published once to the feed group (apps/spend/live.py); each consumer
keeps only the rows its viewer may see, with the rules ``tenant_q`` applies to ledger rows
(organization, team, owner = the key's user). The viewer's rights are re-read every
``RECHECK_SECONDS``: a removed membership, a deactivated user or a logged-out session stops the feed.
"""

from __future__ import annotations

import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.spend.live import FEED_GROUP
from apps.teams.models import User
from apps.teams.scoping import UserTenancy, tenancy_for

CLOSE_FORBIDDEN = 4403
RECHECK_SECONDS = 30.0
PRIVATE_FIELDS = ("organization_id", "user_id")


def row_visible(tenancy: UserTenancy, row: dict[str, Any]) -> bool:
    """Ledger-row visibility (``tenant_q`` for VIEW on paths organization/team/owner), for one row."""
    if tenancy.is_superuser:
        return True
    if row.get("organization_id") in tenancy.org_view:
        return True
    if row.get("team_id") in tenancy.team_admin:
        return True
    return tenancy.user_id is not None and row.get("user_id") == tenancy.user_id


def _current_tenancy(user, session) -> UserTenancy | None:
    """The viewer's rights now, or None when they may not watch (anonymous, inactive, not staff, logged
    out, or no longer a member of anything)."""
    if not getattr(user, "is_authenticated", False):
        return None
    fresh = User.objects.filter(pk=user.pk, is_active=True, is_staff=True).first()
    if fresh is None:
        return None
    if session is not None and session.session_key and not session.exists(session.session_key):
        return None
    tenancy = tenancy_for(fresh)
    if not (tenancy.is_superuser or tenancy.org_view or tenancy.team_view):
        return None  # in no organization or team any more: nothing of anyone's to watch
    return tenancy


class LiveTrafficConsumer(AsyncJsonWebsocketConsumer):
    """Pushes finished requests to the live page. Read-only: messages from the browser are ignored."""

    tenancy: UserTenancy | None = None
    checked_at: float = 0.0

    async def connect(self) -> None:
        self.tenancy = await self._recheck()
        if self.tenancy is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        await self.channel_layer.group_add(FEED_GROUP, self.channel_name)
        await self.accept()
        await self.send_json({"type": "hello"})

    async def disconnect(self, code: int) -> None:
        if self.tenancy is not None:
            await self.channel_layer.group_discard(FEED_GROUP, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        return None

    async def _recheck(self) -> UserTenancy | None:
        self.checked_at = time.monotonic()
        return await database_sync_to_async(_current_tenancy)(self.scope.get("user"), self.scope.get("session"))

    async def live_rows(self, message: dict) -> None:
        if time.monotonic() - self.checked_at > RECHECK_SECONDS:
            self.tenancy = await self._recheck()
            if self.tenancy is None:
                await self.channel_layer.group_discard(FEED_GROUP, self.channel_name)
                await self.close(code=CLOSE_FORBIDDEN)
                return
        tenancy = self.tenancy
        rows = [
            {k: v for k, v in row.items() if k not in PRIVATE_FIELDS}
            for row in message.get("rows", [])
            if row_visible(tenancy, row)
        ]
        if rows:
            await self.send_json({"type": "rows", "rows": rows})
