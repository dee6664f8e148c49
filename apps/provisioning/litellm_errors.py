"""Errors of the LiteLLM-compatible routes in LiteLLM's own body, so its clients read them as they read LiteLLM's.

LiteLLM's proxy answers a refused management call with its ``ProxyException`` shape (``litellm/proxy/_types.py``):
``{"error": {"message": ..., "type": ..., "param": ..., "code": "<HTTP status as text>"}}``, ``type`` being
one of its error types (``bad_request_error``, ``auth_error``, ``not_found_error``, ``internal_server_error``).
The statuses stay the gateway's (400, 401, 403, 404, ...); only the body is LiteLLM's. The checks behind
them are the same as ``/api/v1/``'s: this module reshapes ``api_exception_handler``'s answer, nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rest_framework.decorators import api_view

from apps.teams.api_base import api_exception_handler

ERROR_TYPES = {400: "bad_request_error", 401: "auth_error", 403: "auth_error", 404: "not_found_error"}


def _messages(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(_messages(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_messages(v)}" for k, v in value.items())
    return str(value)


def litellm_error(status: int, detail: Any) -> dict:
    """DRF's error detail (``{"detail": ...}`` or ``{field: [messages]}``) as LiteLLM's error body.

    ``param`` names the first field at fault (None for errors about the whole request); every field's
    messages are in ``message``, so nothing DRF said is lost.
    """
    param = None
    if isinstance(detail, dict) and set(detail) != {"detail"}:
        fields = [name for name in detail if name != "non_field_errors"]
        param = fields[0] if fields else None
        message = _messages({k: v for k, v in detail.items() if k != "non_field_errors"})
        if "non_field_errors" in detail:
            message = "; ".join(m for m in (_messages(detail["non_field_errors"]), message) if m)
    elif isinstance(detail, dict):
        message = _messages(detail["detail"])
    else:
        message = _messages(detail)
    error_type = ERROR_TYPES.get(status, "internal_server_error" if status >= 500 else "bad_request_error")
    return {"error": {"message": message, "type": error_type, "param": param, "code": str(status)}}


def litellm_exception_handler(exc, context):
    response = api_exception_handler(exc, context)
    if response is not None:
        response.data = litellm_error(response.status_code, response.data)
    return response


def litellm_route(methods: Sequence[str]) -> Callable:
    """``@api_view(methods)`` whose errors are answered in LiteLLM's body (the rest of DRF unchanged)."""

    def decorator(func: Callable) -> Callable:
        view = api_view(list(methods))(func)
        view.cls.get_exception_handler = lambda self: litellm_exception_handler
        return view

    return decorator
