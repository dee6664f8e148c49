"""A local HTTP server that receives alert deliveries (generic webhooks, Slack incoming webhooks).

Every POST is recorded as (path, headers, JSON body); ``/broken`` answers 500, anything else 200 "ok"
like Slack does.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.support.threaded_app import ThreadedApp


class WebhookReceiver(ThreadedApp):
    runner_options = {"access_log": None}

    def __init__(self) -> None:
        super().__init__()
        self.base = f"http://127.0.0.1:{self.port}"
        self.received: list[dict[str, Any]] = []

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def bodies(self, path: str) -> list[Any]:
        return [r["body"] for r in list(self.received) if r["path"] == "/" + path.lstrip("/")]

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append({"path": request.path, "headers": dict(request.headers), "body": body})
        if request.path == "/broken":
            return web.Response(status=500, text="no")
        return web.Response(text="ok")

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._receive)
        return app
