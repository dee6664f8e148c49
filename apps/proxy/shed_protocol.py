"""uvicorn's httptools protocol with overload shedding moved in front of the ASGI machinery.

Start the gateway with ``uvicorn ... --http apps.proxy.shed_protocol:ShedFirstHttpProtocol`` (the scripts and
the image do). Why: at twice a worker's capacity most requests are shed, and what a shed request costs
decides how much of the worker is left for the requests it admits. Answered through ASGI, a shed request
still paid for everything uvicorn does for any request (the scope, a ``RequestResponseCycle`` with its
event, an asyncio task, two ASGI messages validated header by header, two writes) plus the proxy's own
request setup: about a fifth of a served request. Here the decision is taken as soon as the request's
headers are parsed, by the same ``LoadShedder`` with the same rule (lowest priority first, by the key's
cached priority), and a shed request's whole answer is one prebuilt write: no task, no ASGI call.

Everything else is uvicorn's own code path: when the worker is not behind (the steady state: one clock
read per request), for paths that are not the proxy's (``/health``, ``/metrics``, the admin, the API,
``/v1/key/``, unknown URLs, which keep their 404), for a request pipelined behind one still running (its
answer must not overtake), for ``Expect: 100-continue`` and upgrades. A request this protocol admits is
marked in its scope (``SHED_DECIDED``) so the endpoint does not draw the shed ramp's lottery a second time.
The answer is the one the ASGI path gives (503, ``retry-after``, the gateway's headers, the OpenAI error
shape), counted the same way (``gateway_overload_shed_total`` and ``gateway_requests_total``).
"""

from __future__ import annotations

import time

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# No project import at module level: uvicorn imports this class (``--http``) before it loads the app, i.e.
# before Django is set up, and the proxy's modules import models. They are bound once the app is loaded.
PROXY_PREFIX = b"/v1/"
DJANGO_PREFIX = b"/v1/key/"  # the key holder's self-service routes are Django's (gateway_project/asgi.py)


class _NoEvent:
    """What uvicorn's connection_lost expects of a cycle's ``message_event``."""

    @staticmethod
    def set() -> None:
        return None


class _Answered:
    """Stands in for the ``RequestResponseCycle`` of a request answered here: already complete, so uvicorn
    skips the rest of its body and starts the next request on the connection as usual."""

    __slots__ = ("keep_alive", "response")
    response_complete = True
    disconnected = False
    message_event = _NoEvent

    def __init__(self, response: bytes, keep_alive: bool) -> None:
        self.response = response
        self.keep_alive = keep_alive


class ShedFirstHttpProtocol(HttpToolsProtocol):
    gateway = None  # the proxy's Gateway, looked up once the app is loaded (see connection_made)

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if ShedFirstHttpProtocol.gateway is None:
            # Not at import: uvicorn imports this class before the app, i.e. before Django is set up.
            from apps.proxy.app import proxy_app

            ShedFirstHttpProtocol.gateway = proxy_app

    def on_headers_complete(self) -> None:
        gw = self.gateway
        if gw is not None and gw.ready:
            lag = gw.shedder.lag_past_threshold()
            if lag is not None and self._shed(gw, lag):
                return
        super().on_headers_complete()

    def _shed(self, gw, lag: float) -> bool:
        """Answer the request here if the shedder refuses it; False: uvicorn serves it (with the decision
        recorded in its scope when it was taken here)."""
        url = self.url
        if not url.startswith(PROXY_PREFIX) or url.startswith(DJANGO_PREFIX) or b"%" in url or self.root_path:
            return False
        cycle = self.cycle
        if (cycle is not None and not cycle.response_complete) or self.expect_100_continue:
            return False
        parser = self.parser
        if parser.should_upgrade():
            return False
        path = url.split(b"?", 1)[0].decode("ascii", "replace")
        op, _args = gw.route(parser.get_method().decode("ascii", "replace"), path)
        if op is None or op == "openapi":  # a 404/405, or the public description: never shed
            return False
        # Not at module level (see the top); only reached while the worker is behind.
        from apps.proxy import endpoints  # (after Django's setup, see the top)
        from apps.proxy.auth import bearer_token  # (after Django's setup)
        from apps.proxy.errors import GatewayError  # (after Django's setup)
        from apps.proxy.overload import SHED_DECIDED  # (after Django's setup)
        from apps.ratelimit import observe  # (after Django's setup)

        started = time.perf_counter()
        try:
            gw.shedder.admit(lag, gw.auth.known(bearer_token(dict(self.headers))))
        except GatewayError as exc:
            keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
            self.cycle = _Answered(self._response(gw, exc, started, keep_alive), keep_alive)  # type: ignore[assignment]
            route = endpoints.ROUTE_OF.get(op, endpoints.UNKNOWN_ROUTE)
            observe.request_unauthenticated(route, exc.status, exc.kind, started)
            return True
        self.scope[SHED_DECIDED] = True  # type: ignore[literal-required]
        return False

    def _response(self, gw, exc, started: float, keep_alive: bool) -> bytes:
        # Not at module level (see the top); only reached for a shed request.
        from apps.proxy.asgi_io import encode_headers

        body = orjson.dumps(exc.to_body())
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *gw.common_headers(gw.new_request_id(), started),
            *encode_headers(exc.headers),
        ]
        if not keep_alive:
            headers.append((b"connection", b"close"))
        parts = [STATUS_LINE[exc.status]]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts += (b"\r\n", body)
        return b"".join(parts)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if type(cycle) is not _Answered:
            super().on_message_complete()
            return
        # The whole request is read (its body skipped): answer, then go on as uvicorn does after a response.
        self.transport.write(cycle.response)
        if not cycle.keep_alive:
            self.transport.close()
        self.on_response_complete()
