"""A client that declares a body and stops sending it gets a 408; the request is not held forever."""

from __future__ import annotations

import orjson
import pytest

from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import GatewayServer
from tests.support.hostile_upstream import raw_exchange, status_of

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_stalled_request_body_is_a_408_and_the_connection_closes(tenant):
    with GatewayServer(PROXY_BODY_IDLE_TIMEOUT_SECONDS="0.5") as gateway:
        request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tenant.alice_key.secret}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        ).encode() + b'{"model": "x", "mess'  # ...and nothing more
        answer = raw_exchange(gateway, request, timeout=20)
    assert status_of(answer) == 408, answer[:300]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert orjson.loads(body)["error"]["code"] == "request_timeout"
