"""The live traffic websocket, through the real ASGI application and the configured channel layer.

Under scripts/test.sh that is the Redis channel layer (REDIS_URL set); without it the in-memory one.
The browser's session cookie authenticates the socket, exactly as on the live page.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.conf import settings as django_settings
from django.test import Client

from apps.console import consumers
from apps.spend.events import SpendEvent
from apps.spend.live import LivePublisher, live_row
from apps.teams.scoping import tenancy_for
from tests.factories import SpendEventFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _event(*, org=None, team=None, user=None, alias="k", status=200, limit_type=None) -> SpendEvent:
    return SpendEventFactory(
        status=status,
        organization_id=org,
        team_id=team,
        key_id=1,
        key_alias=alias,
        user_id=user,
        cost="0.001",
        latency_ms=3.21,
        limit_type=limit_type,
    )


class Socket(ApplicationCommunicator):
    """A websocket client speaking raw ASGI to the application (channels.testing would need daphne)."""

    def __init__(self, application, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        scope = {
            "type": "websocket",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": headers,
            "subprotocols": [],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        super().__init__(application, scope)

    async def connect(self, timeout: float = 5) -> tuple[bool, dict]:
        await self.send_input({"type": "websocket.connect"})
        output = await self.receive_output(timeout)
        return output["type"] == "websocket.accept", output

    async def receive_json_from(self, timeout: float = 3) -> dict:
        output = await self.receive_output(timeout)
        assert output["type"] == "websocket.send", output
        return json.loads(output["text"])

    async def disconnect(self, code: int = 1000) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout=3)


def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


async def _connect(user=None) -> tuple[Socket, bool]:
    from gateway_project.asgi import application

    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if user is not None:
        cookie = await sync_to_async(_session_cookie)(user)
        headers.append((b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode()))
    communicator = Socket(application, "/ws/admin/live/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    return communicator, connected


async def _rows(communicator: Socket, timeout: float = 3.0) -> list[dict]:
    message = await communicator.receive_json_from(timeout=timeout)
    while message["type"] != "rows":
        message = await communicator.receive_json_from(timeout=timeout)
    return message["rows"]


async def test_team_admin_receives_their_teams_rows_only(alice, alpha, omega):
    communicator, connected = await _connect(alice)
    assert connected
    assert (await communicator.receive_json_from(timeout=3))["type"] == "hello"
    publisher = LivePublisher()
    publisher._buffer.append(live_row(_event(org=omega.organization_id, team=omega.pk, alias="omega-key")))
    publisher._buffer.append(live_row(_event(org=alpha.organization_id, team=alpha.pk, alias="alpha-key")))
    await publisher.flush()
    rows = await _rows(communicator)
    assert [row["key_alias"] for row in rows] == ["alpha-key"]
    assert "user_id" not in rows[0] and "organization_id" not in rows[0]
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_org_admin_gets_each_row_once_and_429_limit_type(olga, alpha):
    communicator, connected = await _connect(olga)
    assert connected
    publisher = LivePublisher()
    event = _event(org=alpha.organization_id, team=alpha.pk, status=429, limit_type="budget")
    publisher._buffer.append(live_row(event))
    await publisher.flush()
    rows = await _rows(communicator)
    assert [(r["request_id"], r["status"], r["limit_type"]) for r in rows] == [(event.request_id, 429, "budget")]
    await communicator.disconnect()


async def test_member_sees_only_their_own_keys(bob, alice, alpha):
    communicator, connected = await _connect(bob)
    assert connected
    publisher = LivePublisher()
    publisher._buffer.append(live_row(_event(org=alpha.organization_id, team=alpha.pk, user=alice.pk, alias="alices")))
    publisher._buffer.append(live_row(_event(org=alpha.organization_id, team=alpha.pk, user=bob.pk, alias="bobs")))
    await publisher.flush()
    assert [r["key_alias"] for r in await _rows(communicator)] == ["bobs"]
    await communicator.disconnect()


async def test_anonymous_socket_is_refused():
    from gateway_project.asgi import application

    communicator = Socket(application, "/ws/admin/live/", [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")])
    connected, output = await communicator.connect()
    assert not connected
    assert output == {"type": "websocket.close", "code": 4403, "reason": ""} or output.get("code") == 4403


async def test_foreign_origin_is_refused(alice):
    from gateway_project.asgi import application

    cookie = await sync_to_async(_session_cookie)(alice)
    headers = [(b"origin", b"http://evil.example"), (b"cookie", f"sessionid={cookie}".encode())]
    communicator = Socket(application, "/ws/admin/live/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert not connected


async def test_publish_from_the_request_path_is_batched(alice, alpha):
    communicator, connected = await _connect(alice)
    assert connected
    publisher = LivePublisher(flush_seconds=0.05)
    for _ in range(5):
        publisher.publish(_event(org=alpha.organization_id, team=alpha.pk))
    assert len(publisher._buffer) == 5  # nothing sent inline
    rows = await _rows(communicator)
    assert len(rows) == 5
    await communicator.disconnect()
    await asyncio.sleep(0)


async def test_a_removed_membership_stops_the_feed(alice, alpha, monkeypatch):
    monkeypatch.setattr(consumers, "RECHECK_SECONDS", 0.0)
    communicator, connected = await _connect(alice)
    assert connected
    assert (await communicator.receive_json_from())["type"] == "hello"
    await sync_to_async(lambda: alice.memberships.all().delete())()
    publisher = LivePublisher()
    publisher._buffer.append(live_row(_event(org=alpha.organization_id, team=alpha.pk, alias="after")))
    await publisher.flush()
    output = await communicator.receive_output(timeout=3)
    assert output == {"type": "websocket.close", "code": 4403, "reason": ""} or output.get("code") == 4403


def test_row_visibility_follows_the_tenant_rules(alice, bob, olga, charlie, root, alpha, omega):
    alpha_row = {"organization_id": alpha.organization_id, "team_id": alpha.pk, "user_id": None}
    bobs_row = {**alpha_row, "user_id": bob.pk}
    omega_row = {"organization_id": omega.organization_id, "team_id": omega.pk, "user_id": charlie.pk}
    seen = {
        user.username: [consumers.row_visible(tenancy_for(user), row) for row in (alpha_row, bobs_row, omega_row)]
        for user in (alice, bob, olga, charlie, root)
    }
    assert seen == {
        "alice": [True, True, False],
        "bob": [False, True, False],
        "olga": [True, True, False],
        "charlie": [False, False, True],
        "root": [True, True, True],
    }


async def test_logging_out_stops_the_feed(alice, alpha, monkeypatch):
    from django.contrib.sessions.models import Session

    monkeypatch.setattr(consumers, "RECHECK_SECONDS", 0.0)
    communicator, connected = await _connect(alice)
    assert connected
    assert (await communicator.receive_json_from())["type"] == "hello"
    await sync_to_async(lambda: Session.objects.all().delete())()
    publisher = LivePublisher()
    publisher._buffer.append(live_row(_event(org=alpha.organization_id, team=alpha.pk)))
    await publisher.flush()
    output = await communicator.receive_output(timeout=3)
    assert output["type"] == "websocket.close" and output["code"] == 4403


async def test_a_dead_channel_layer_never_reaches_the_request(monkeypatch, caplog):
    class DeadLayer:
        async def group_send(self, group, message):
            raise ConnectionError("redis is gone")

    monkeypatch.setattr("channels.layers.get_channel_layer", lambda *a, **k: DeadLayer())
    publisher = LivePublisher(flush_seconds=60)
    for _ in range(3):
        publisher.publish(_event(org=1, team=2))  # queues only: the request path never awaits the layer
    assert await publisher.flush() == 0
    publisher.publish(_event(org=1, team=2))
    assert await publisher.flush() == 0
    assert publisher._dropped == 4
    assert len([r for r in caplog.records if "live feed" in r.getMessage()]) == 1  # one warning, not one per flush
    publisher._task.cancel()
