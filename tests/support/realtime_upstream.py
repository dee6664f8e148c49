"""A local upstream that speaks the OpenAI Realtime protocol over WebSocket (the GA event names).

``GET /v1/realtime?model=...`` (OpenAI) and ``GET /azure/openai/realtime?deployment=...`` (Azure) open a
session: ``session.created`` first, then per client event:

- ``session.update`` -> ``session.updated``
- ``response.create`` -> ``response.created``, ``response.output_text.delta`` x3, ``response.output_text.done``,
  ``response.done`` with usage (``USAGE``); with the model ``leak-key`` instead an ``error`` event whose
  message quotes the upstream API key (as providers do for a bad key); with ``never-done`` no
  ``response.done`` (the session closes with the response still open)
- ``input_audio_buffer.commit`` -> a response the server starts by itself (as turn detection does)

Every handshake is recorded in ``handshakes`` (path with query, lower-case headers); every client event in ``events``.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from tests.support.threaded_app import ThreadedApp

USAGE = {
    "total_tokens": 170,
    "input_tokens": 120,
    "output_tokens": 50,
    "input_token_details": {
        "text_tokens": 20,
        "audio_tokens": 100,
        "cached_tokens": 40,
        "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 40},
    },
    "output_token_details": {"text_tokens": 10, "audio_tokens": 40},
}
TEXT = ["Hello", " from", " realtime"]


class RealtimeUpstream(ThreadedApp):
    def __init__(self) -> None:
        super().__init__()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/v1"
        self.handshakes: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/realtime", self.session)
        app.router.add_get("/azure/openai/realtime", self.session)
        return app

    async def session(self, request: web.Request) -> web.WebSocketResponse:
        headers = {str(k).lower(): v for k, v in request.headers.items()}
        self.handshakes.append({"path": request.path_qs, "headers": headers})
        model = request.query.get("model") or request.query.get("deployment") or ""
        api_key = request.headers.get("authorization", "").removeprefix("Bearer ") or request.headers.get("api-key", "")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await self._send(ws, {"type": "session.created", "session": {"id": f"sess_{next(self._ids)}", "model": model}})
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            event = orjson.loads(message.data)
            self.events.append(event)
            kind = event.get("type")
            if kind == "session.update":
                await self._send(ws, {"type": "session.updated", "session": event.get("session") or {}})
            elif kind == "response.create":
                if model == "leak-key":
                    message = f"Incorrect API key provided: {api_key}."
                    error = {"type": "invalid_request_error", "message": message, "event_id": event.get("event_id")}
                    await self._send(ws, {"type": "error", "error": error})
                    continue
                await self._respond(ws, done=model != "never-done")
            elif kind == "input_audio_buffer.commit":
                await self._send(ws, {"type": "input_audio_buffer.committed", "item_id": "item_audio"})
                await self._respond(ws, done=True)
        return ws

    async def _respond(self, ws: web.WebSocketResponse, *, done: bool) -> None:
        response_id = f"resp_{next(self._ids)}"
        response = {"id": response_id, "object": "realtime.response", "status": "in_progress", "output": []}
        await self._send(ws, {"type": "response.created", "response": response})
        for delta in TEXT:
            await self._send(
                ws, {"type": "response.output_text.delta", "response_id": response_id, "item_id": "item_1",
                     "output_index": 0, "content_index": 0, "delta": delta},
            )  # fmt: skip
        await self._send(
            ws, {"type": "response.output_text.done", "response_id": response_id, "item_id": "item_1",
                 "output_index": 0, "content_index": 0, "text": "".join(TEXT)},
        )  # fmt: skip
        if done:
            finished = {**response, "status": "completed", "usage": USAGE}
            await self._send(ws, {"type": "response.done", "response": finished})

    async def _send(self, ws: web.WebSocketResponse, event: dict[str, Any]) -> None:
        await ws.send_str(orjson.dumps({"event_id": f"event_{next(self._ids)}", **event}).decode())
