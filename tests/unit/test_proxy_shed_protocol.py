"""The shed-first HTTP protocol on a real uvicorn server, spoken to over raw sockets.

What is under test is the protocol (apps/proxy/shed_protocol.py): which requests it answers itself while the
worker is behind, that its answer is the overload contract (503, ``retry-after``, the OpenAI error shape, the
gateway's headers, counted), and that the connection stays correct HTTP/1.1 around it (the shed request's body
skipped, keep-alive, pipelining order, HTTP/1.0 close). The worker's lag is pinned (a monitor that reports a
fixed value) and the ASGI app behind it only echoes what reached it: real lag and the real proxy app under
real load are tests/e2e/test_proxy_overload.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import uvicorn

from apps.proxy.app import Gateway
from apps.proxy.auth import MASTER_CONTEXT, AuthCache
from apps.proxy.overload import SHED_DECIDED, LoadShedder, LoopLagMonitor
from apps.proxy.shed_protocol import ShedFirstHttpProtocol
from apps.ratelimit import metrics

LOW, HIGH = "sk-low-priority-key", "sk-high-priority-key"


class PinnedLag(LoopLagMonitor):
    def current(self) -> float:
        return self.lag


async def echo_app(scope, receive, send) -> None:
    """Stands for the proxy app: answers 200 with what it was given (path, the protocol's mark, the body)."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/v1/slow":
        await asyncio.sleep(0.3)
    payload = json.dumps({"path": scope["path"], "decided": SHED_DECIDED in scope, "body": body.decode()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(payload))]})
    await send({"type": "http.response.body", "body": payload})


def gateway(monitor: PinnedLag) -> Gateway:
    async def never(*_args):
        raise AssertionError("no key lookup while deciding to shed")

    gw = Gateway()
    gw._id_prefix = "feedface"
    gw.shedder = LoadShedder(threshold_ms=100, monitor=monitor)
    gw.auth = AuthCache(ttl=30, master_key="sk-master-0123456789", run_sync=never)
    key = replace(MASTER_CONTEXT, is_master=False, key_id=7)
    gw.auth._entries[LOW] = (replace(key, priority=0), 0.0)
    gw.auth._entries[HIGH] = (replace(key, priority=100), 0.0)
    gw.ready = True
    return gw


@pytest.fixture
async def server():
    monitor = PinnedLag()
    ShedFirstHttpProtocol.gateway = gateway(monitor)
    config = uvicorn.Config(
        echo_app, host="127.0.0.1", port=0, http=ShedFirstHttpProtocol, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield port, monitor
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(task, 10)
        ShedFirstHttpProtocol.gateway = None


def request(path: str, key: str | None = LOW, body: bytes = b'{"model": "m"}', version: str = "1.1") -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = f"POST {path} HTTP/{version}\r\nHost: gw\r\n{auth}Content-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if line)
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return int(lines[0].split()[1]), headers, body


async def test_a_lagging_worker_answers_a_low_priority_request_itself_and_the_connection_goes_on(server):
    port, monitor = server
    monitor.lag = 0.25  # past priority 0's whole ramp (0.1-0.2 s), below priority 100's
    before = metrics.SHED.labels("0")._value.get()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # A shed request with a body, then (same write) an admitted one: the body must be skipped, not parsed.
    writer.write(request("/v1/chat/completions", body=b'{"model": "m", "messages": []}'))
    writer.write(request("/v1/chat/completions", key=HIGH, body=b"second"))
    await writer.drain()

    status, headers, body = await read_response(reader)
    assert status == 503 and headers["retry-after"] == "1", (headers, body)
    assert headers["content-type"] == "application/json" and headers["x-request-id"].startswith("req_feedface")
    assert headers["x-gateway-deployment"] == "none" and "connection" not in headers
    error = json.loads(body)["error"]
    assert error["type"] == "overloaded_error" and error["code"] == "gateway_overloaded"
    assert "250 ms behind" in error["message"] and "priority 0" in error["message"]
    assert error["llm_provider"] == "gateway"
    assert metrics.SHED.labels("0")._value.get() == before + 1

    status, _headers, body = await read_response(reader)
    # Admitted here, so the endpoint must not draw again: the app sees the protocol's mark.
    assert status == 200 and json.loads(body) == {"path": "/v1/chat/completions", "decided": True, "body": "second"}

    monitor.lag = 0.0  # caught up: everything goes to the app, unmarked
    writer.write(request("/v1/chat/completions", body=b"third"))
    await writer.drain()
    status, _headers, body = await read_response(reader)
    assert status == 200 and json.loads(body)["decided"] is False and json.loads(body)["body"] == "third"
    writer.close()


async def test_what_is_not_a_proxy_call_is_never_shed_here(server):
    port, monitor = server
    monitor.lag = 5.0
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # Health, the key holder's self-service (Django), an unknown URL (its 404 is the app's), the public
    # OpenAPI description: all reach the app, not marked.
    for path in ("/health/live", "/v1/key/info", "/v1/no-such-thing", "/v1/openapi.json"):
        writer.write(request(path).replace(b"POST", b"GET", 1) if path == "/v1/openapi.json" else request(path))
        await writer.drain()
        status, _headers, body = await read_response(reader)
        assert status == 200 and json.loads(body)["path"] == path and json.loads(body)["decided"] is False
    writer.close()


async def test_a_request_pipelined_behind_a_running_one_never_overtakes_it(server):
    port, monitor = server
    monitor.lag = 0.25
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # The first (admitted, slow) is still running when the second arrives: the second must wait for it and
    # go through the app's own path instead of being answered ahead of it.
    writer.write(request("/v1/slow", key=HIGH, body=b"first") + request("/v1/chat/completions", body=b"second"))
    await writer.drain()
    status, _headers, body = await read_response(reader)
    assert status == 200 and json.loads(body)["body"] == "first"
    status, _headers, body = await read_response(reader)
    assert status == 200 and json.loads(body) == {"path": "/v1/chat/completions", "decided": False, "body": "second"}
    writer.close()


async def test_an_http_1_0_client_gets_the_503_and_a_closed_connection(server):
    port, monitor = server
    monitor.lag = 0.25
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request("/v1/embeddings", key=None, version="1.0"))  # no key: shed as not authenticated yet
    await writer.drain()
    status, headers, _body = await read_response(reader)
    assert status == 503 and headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
    writer.close()


def test_uvicorn_can_import_the_class_before_django_is_set_up():
    """uvicorn imports an ``--http`` class before it loads the app: the module must not need Django's apps
    (importing the proxy's modules at its top made every worker fail to start)."""
    code = (
        "from uvicorn.importer import import_from_string\n"
        "import_from_string('apps.proxy.shed_protocol:ShedFirstHttpProtocol')\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "gateway_project.settings.test"}
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
