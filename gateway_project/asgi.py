"""One ASGI application for the whole gateway.

HTTP under ``/v1/`` goes straight to the proxy app (async end to end, never through Django's request
handler, which alone caps near 1,300 req/s here); the key holder's self-service routes under
``/v1/key/`` and everything else go to Django; the ``/v1/realtime`` WebSocket goes to the proxy too
(authenticated by virtual key, so no origin check), every other websocket to channels consumers. The
provider pass-through routes ``/openai/``, ``/anthropic/``, ``/gemini/`` are the proxy's as well, and
``/mcp`` goes to the MCP gateway beside it.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings.local")

from django.core.asgi import get_asgi_application

from gateway_project.tracing import django_tracing_setup

django_tracing_setup()  # OTEL_EXPORTER_OTLP_ENDPOINT set: before the handler reads its middleware
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from apps.mcp.app import McpApp  # noqa: E402
from apps.proxy.app import proxy_app  # noqa: E402
from gateway_project.routing import websocket_urlpatterns  # noqa: E402

DJANGO_V1_PREFIXES = ("/v1/key/",)
# The MCP gateway (docs/mcp.md): beside the proxy, on its event loop, auth cache and limiter chain.
mcp_app = McpApp(proxy_app)
MCP_PATHS = ("/mcp", "/mcp/")
PROXY_WEBSOCKET_PATHS = frozenset({"/v1/realtime", "/v1/realtime/"})
PASSTHROUGH_PREFIXES = ("/openai/", "/anthropic/", "/gemini/")


async def http_dispatch(scope, receive, send):
    path = scope["path"]
    if path.startswith("/v1/") and not path.startswith(DJANGO_V1_PREFIXES):
        await proxy_app(scope, receive, send)
    else:
        await django_asgi_app(scope, receive, send)


_router = ProtocolTypeRouter(
    {
        "http": http_dispatch,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        "lifespan": proxy_app,  # its startup builds, its shutdown flushes the spend outbox
    }
)


async def application(scope, receive, send):
    """/v1 requests reach the proxy without passing the protocol router (two frames fewer per request)."""
    if scope["type"] == "http":
        path = scope["path"]
        if path.startswith("/v1/") and not path.startswith(DJANGO_V1_PREFIXES):
            await proxy_app.http(scope, receive, send)
            return
        if path in MCP_PATHS:
            await mcp_app(scope, receive, send)
            return
        if path.startswith(PASSTHROUGH_PREFIXES):
            await proxy_app.passthrough(scope, receive, send)
            return
    elif scope["type"] == "websocket" and scope["path"] in PROXY_WEBSOCKET_PATHS:
        await proxy_app.websocket(scope, receive, send)
        return
    await _router(scope, receive, send)
