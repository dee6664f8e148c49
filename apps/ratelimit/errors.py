"""The one exception every gateway-emitted 429 goes through, and its single rendering.

Every limiter raises ``ProxyRateLimitError``; the proxy renders it with ``render_rate_limit_error``
in the OpenAI error shape, tagged with the provider and model the request was going to.
"""

from __future__ import annotations

import math

from apps.proxy.context import FALLBACK_PROVIDER
from apps.proxy.errors import GatewayError

LIMIT_TYPES = ("requests", "tokens", "concurrent_requests", "budget", "max_iterations")


def _whole_seconds(seconds: float | None) -> int:
    """``retry-after`` in whole seconds >= 1; nonsense (None, NaN, inf, negative) becomes 1, never an error."""
    try:
        value = float(seconds or 0)
    except (TypeError, ValueError):
        return 1
    if not math.isfinite(value) or value <= 0:
        return 1
    return max(1, math.ceil(value))


def _whole_ms(seconds: float | None) -> int:
    try:
        value = float(seconds or 0)
    except (TypeError, ValueError):
        return 1000
    return max(1, math.ceil(value * 1000)) if math.isfinite(value) and value > 0 else 1000


class ProxyRateLimitError(Exception):
    """A limit of the gateway's own refused the request (never an upstream 429).

    Carries what clients need to back off (``retry_after`` in seconds, the real time until capacity
    returns) and what operators need to see (provider/model tag, limit type, scope).
    Constructing it never raises: a missing tag falls back to ``gateway``.
    """

    status_code = 429
    # The fields client libraries and LiteLLM-style callers read off a rate-limit exception.
    code = "rate_limit_exceeded"
    type = "rate_limit_error"
    num_retries: int | None = None
    max_retries: int | None = None

    def __init__(
        self,
        message: str,
        *,
        limit_type: str,
        scope: str,
        retry_after: float,
        llm_provider: str | None = None,
        model: str | None = None,
        limit: float | None = None,
        remaining: float | None = None,
        reset_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.limit_type = limit_type if limit_type in LIMIT_TYPES else "requests"
        self.scope = scope
        self.retry_after = _whole_seconds(retry_after)
        # The precise value too: the openai SDKs prefer ``retry-after-ms`` when present.
        self.retry_after_ms = _whole_ms(retry_after)
        self.llm_provider = llm_provider if isinstance(llm_provider, str) and llm_provider else FALLBACK_PROVIDER
        self.model = model if isinstance(model, str) else ""
        self.limit = limit
        self.remaining = remaining
        self.reset_seconds = reset_seconds if reset_seconds is not None else retry_after

    @property
    def exception_class(self) -> str:
        """The Prometheus ``exception_class`` label: ``Openai.ProxyRateLimitError``."""
        return f"{self.llm_provider.replace('_', ' ').title().replace(' ', '')}.ProxyRateLimitError"

    def tag(self, *, llm_provider: str | None, model: str | None) -> ProxyRateLimitError:
        """Fill in the provider/model tag if the raiser did not know it; never raises."""
        if isinstance(llm_provider, str) and llm_provider and self.llm_provider == FALLBACK_PROVIDER:
            self.llm_provider = llm_provider
        if isinstance(model, str) and model and not self.model:
            self.model = model
        return self

    def to_body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": "rate_limit_error",
                "code": "rate_limit_exceeded",
                "param": None,
                "llm_provider": self.llm_provider,
                "model": self.model,
                "limit_type": self.limit_type,
                "scope": self.scope,
            }
        }

    def headers(self) -> dict[str, str]:
        headers = {"retry-after": str(self.retry_after), "retry-after-ms": str(self.retry_after_ms)}
        kind = "tokens" if self.limit_type == "tokens" else "requests"
        # Budget (USD) and iteration caps are not request counts: their limit stays in the body/attributes.
        counted = self.limit_type in ("requests", "tokens", "concurrent_requests")
        if counted and self.limit is not None and math.isfinite(self.limit):
            headers[f"x-ratelimit-limit-{kind}"] = str(int(self.limit))
        if counted and self.remaining is not None and math.isfinite(self.remaining):
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(self.remaining)))
        reset = float(self.reset_seconds or 0)
        headers[f"x-ratelimit-reset-{kind}"] = f"{reset if math.isfinite(reset) and reset > 0 else 0.0:.3f}s"
        return headers


class LimiterUnavailableError(GatewayError):
    """The counter store did not answer in time and ``RATELIMIT_FAIL_MODE`` is "closed": HTTP 503.

    A ``GatewayError``, so the proxy renders it like every other gateway error (OpenAI error shape).
    """

    exception_class = "Gateway.LimiterUnavailableError"

    def __init__(self, message: str = "The gateway's rate limiter is unavailable; retry shortly.") -> None:
        super().__init__(
            503,
            message,
            code="rate_limiter_unavailable",
            error_type="service_unavailable",
            llm_provider=FALLBACK_PROVIDER,
            headers={"retry-after": "1"},
            kind="limiter_unavailable",
        )
        self.status_code = 503
        self.model = ""

    def tag(self, *, llm_provider: str | None, model: str | None) -> LimiterUnavailableError:
        if isinstance(llm_provider, str) and llm_provider:
            self.llm_provider = llm_provider
        if isinstance(model, str) and model:
            self.model = model
        return self


class CustomerBlockedError(GatewayError):
    """The organization blocked this end user (``Customer.blocked``, matched on the request's ``user``): 403.

    Access, not a limit: raised whichever limiters are configured, never retried by clients.
    """

    def __init__(self, external_id: str) -> None:
        super().__init__(
            403,
            f"The end user '{external_id}' is blocked by this organization.",
            code="customer_blocked",
            param="user",
            error_type="permission_error",
            kind="customer_blocked",
        )
