"""Real processes for the rate-limit integration tests: a mock OpenAI upstream and a uvicorn gateway.

The upstream runs in a thread with its own event loop and behaves by the requested model name:
``ok`` answers, ``fail`` answers 500, ``hang`` never answers, ``slow`` answers after 3 s, ``drip`` streams
a chunk every 100 ms for a minute (so the client can walk away mid-stream).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time

import orjson
from aiohttp import web

from tests.support.processes import ServerProcess, child_env, free_port, uvicorn_command
from tests.support.threaded_app import ThreadedApp


def _completion(model: str) -> dict:
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }


async def _chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = body.get("model", "")
    if model == "fail":
        return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
    if model == "hang":
        await asyncio.sleep(120)
    if model == "slow":
        await asyncio.sleep(3)
    if model == "drip":
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for i in range(600):
            chunk = {
                "id": "chatcmpl-drip",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
            }
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            await asyncio.sleep(0.1)
        return response
    return web.json_response(_completion(model))


class MockUpstream(ThreadedApp):
    runner_options = {"access_log": None, "handler_cancellation": True, "shutdown_timeout": 0.5}

    def __init__(self) -> None:
        super().__init__()
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", _chat)
        return app


class GatewayServer(ServerProcess):
    """``uvicorn gateway_project.asgi:application --workers N`` on a free port, with the test env."""

    def __init__(self, workers: int = 4, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.metrics_dir = tempfile.mkdtemp(prefix="gw-prom-")
        fd, log_path = tempfile.mkstemp(prefix="gw-uvicorn-", suffix=".log")
        os.close(fd)
        super().__init__(
            uvicorn_command(self.port, workers),
            env=child_env(
                **{
                    "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
                    # The test machine is shared: a slow Redis must fail loudly (503), not admit uncounted.
                    "RATELIMIT_REDIS_TIMEOUT_MS": "3000",
                    "RATELIMIT_FAIL_MODE": "closed",
                    **env,  # a test's own values win
                }
            ),
            ready_url=self.url + "/health/live",
            log_path=log_path,
        )

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)
