"""What the /v1 flows tell a request's span, without the OpenTelemetry SDK (the span is ``apps.proxy.tracing``).

The endpoint modules import these at their top; the SDK loads only with tracing on (``Gateway.startup``).
"""

from __future__ import annotations

import orjson

from apps.proxy.asgi_io import ClientGone
from apps.proxy.context import RequestContext
from apps.proxy.errors import GatewayError
from apps.proxy.providers.base import Reply
from apps.proxy.registry import Deployment
from apps.ratelimit.errors import ProxyRateLimitError


def failure_of(exc: BaseException) -> tuple[int, str]:
    """(status, error type) of a request that ended in ``exc``, as the span records it."""
    if isinstance(exc, GatewayError):
        return exc.status, exc.kind or "gateway_error"
    if isinstance(exc, ProxyRateLimitError):
        return 429, f"rate_limit:{exc.limit_type}"
    if isinstance(exc, ClientGone):
        return 499, "client_disconnect"
    return 502, type(exc).__name__


def trace_reply(ctx: RequestContext, reply: Reply, body_out: bytes, dep: Deployment) -> None:
    """What the upstream answered, for the request's span: the model that answered (the deployment's
    model when the reply was not parsed), and the completion for teams that opted in to content."""
    trace = ctx.trace
    if not trace.recording:
        return
    obj = reply.obj
    answered = obj.get("model") if isinstance(obj, dict) else None
    trace.response_model = answered if isinstance(answered, str) and answered else dep.model
    if ctx.key.trace_content:
        trace.output = output_messages(body_out)


def output_messages(body_out: bytes) -> str:
    """The answer's messages (chat ``choices[].message``) as JSON, else the body as it went to the client."""
    try:
        obj = orjson.loads(body_out)
    except orjson.JSONDecodeError:
        return body_out.decode("utf-8", "replace")
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if isinstance(choices, list) and choices:
        messages = [c.get("message") or {"text": c.get("text")} for c in choices if isinstance(c, dict)]
        return orjson.dumps(messages).decode()
    return body_out.decode("utf-8", "replace")
