"""An aiohttp app served over real HTTP from a thread of the test process (the mock upstreams)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

from tests.support.processes import free_port


class ThreadedApp:
    """Serves ``build_app()`` on a free loopback port from a daemon thread with its own event loop.

    A context manager: ready on enter, the runner cleaned up and the loop stopped on exit. Subclasses
    give the routes (``build_app``) and, if they need them, ``runner_options`` for ``web.AppRunner``.
    """

    runner_options: dict[str, Any] = {}

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def build_app(self) -> web.Application:
        raise NotImplementedError

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = web.AppRunner(self.build_app(), **self.runner_options)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self):
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
