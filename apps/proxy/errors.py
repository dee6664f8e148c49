"""Errors the /v1 app answers with, always in the OpenAI error shape and never as a 500.

``GatewayError`` is raised anywhere below the app (auth, model resolution, body checks, providers,
router); the app renders it once. Upstream faults carry the provider tag so clients and dashboards
can tell a gateway refusal from a provider's.
"""

from __future__ import annotations

import re
from typing import Any

from apps.proxy.context import FALLBACK_PROVIDER

_KEYLIKE = re.compile(r"(sk|pk|key|api)[-_][A-Za-z0-9_\-*]{6,}", re.IGNORECASE)


# What upstream error texts say about the deployment behind them: provider account ids (OpenAI
# "organization org-..."/"proj_...", AWS ARNs and 12-digit account numbers) and IP addresses of the
# servers behind a self-hosted or proxied upstream.
_ACCOUNT_LIKE = re.compile(
    r"\b(?:org|proj)[-_][A-Za-z0-9]{6,}|\barn:aws[\w-]*:[^\s\"'<>]*|\b\d{12}\b|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"
    r"|\[[0-9a-fA-F:]*:[0-9a-fA-F:]*\](?::\d+)?",
)


def scrub_secrets(text: str, secret: str = "", *, limit: int = 200) -> str:
    """Upstream error text with credentials masked: the exact ``secret`` and anything shaped like a key."""
    if secret:
        text = text.replace(secret, "***")
    return _KEYLIKE.sub("***", text)[:limit]


def scrub_upstream_text(text: str, private: tuple[str, ...] = ()) -> str:
    """An upstream's error text as a client may read it (error paths only: never on a successful request).

    ``private`` are strings of the deployment no client may learn (its key or key parts, its api_base and
    host); on top of those, key-shaped tokens, provider account ids and IP addresses are masked.
    """
    for value in private:
        if value and len(value) >= 4 and value in text:
            text = text.replace(value, "***")
    return _ACCOUNT_LIKE.sub("***", _KEYLIKE.sub("***", text))


ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_denied",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "api_error",
    504: "timeout",
}


class GatewayError(Exception):
    """A request that ends with a 4xx/5xx the client should see, in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        error_type: str | None = None,
        llm_provider: str | None = None,
        headers: dict[str, str] | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type or ERROR_TYPES.get(status, "api_error")
        self.llm_provider = llm_provider
        self.headers = headers or {}
        # Short machine label for logs, metrics and the spend event ("upstream_timeout", ...).
        self.kind = kind or self.error_type

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }
        if self.llm_provider:
            error["llm_provider"] = self.llm_provider
        return {"error": error}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code, kind="bad_request")


def unauthorized() -> GatewayError:
    # One message for unknown, wrong, revoked, blocked and expired keys: nothing to enumerate.
    return GatewayError(401, "Invalid API key.", code="invalid_api_key", kind="auth")


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
        kind="model_not_found",
    )


def guardrails_unsupported(route: str) -> GatewayError:
    """A key with a guardrail policy on a route that relays bodies unchanged (provider pass-through, realtime):
    refused rather than let through unchecked, so a policy cannot be side-stepped by changing the URL."""
    return GatewayError(
        403,
        f"This key has a guardrail policy, which {route} cannot apply (it relays provider-native traffic "
        "unchanged); use the /v1 routes.",
        code="guardrails_unsupported",
        kind="forbidden",
    )


def model_not_allowed(model: str) -> GatewayError:
    return GatewayError(
        403, f"This key may not use the model '{model}'.", code="model_not_allowed", param="model", kind="forbidden"
    )


class UpstreamError(GatewayError):
    """The provider failed. ``retryable`` tells the router whether another attempt may help."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        llm_provider: str = FALLBACK_PROVIDER,
        retryable: bool = False,
        retry_after: float | None = None,
        kind: str = "upstream_error",
        code: str | None = None,
        upstream_status: int | None = None,
        operator_detail: str = "",
    ) -> None:
        headers = {}
        if retry_after is not None:
            headers["retry-after"] = str(max(1, int(retry_after + 0.999)))
        super().__init__(status, message, llm_provider=llm_provider, headers=headers, kind=kind, code=code)
        self.retryable = retryable
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        # What the upstream said, scrubbed of credentials: for logs and the admin, not for clients.
        self.operator_detail = operator_detail or message


class AddressRefused(OSError):
    """Raised by ``SafeResolver``: every address the host resolves to is one upstreams may not use."""
