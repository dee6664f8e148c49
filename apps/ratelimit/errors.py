"""The one exception every gateway-emitted 429 goes through, and its single rendering.

Every limiter raises ``ProxyRateLimitError``; the proxy renders it with ``render_rate_limit_error``
in the OpenAI error shape, tagged with the provider and model the request was going to.
"""

from __future__ import annotations

import math

from apps.proxy.context import FALLBACK_PROVIDER

LIMIT_TYPES = ("requests", "tokens", "concurrent_requests", "budget", "max_iterations")


class ProxyRateLimitError(Exception):
    """A limit of the gateway's own refused the request (never an upstream 429).

    Carries what clients need to back off (``retry_after`` in seconds, the real time until capacity
    returns) and what operators need to see (provider/model tag, limit type, scope).
    Constructing it never raises: a missing tag falls back to ``gateway``.
    """

    status_code = 429

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
        self.retry_after = max(1, math.ceil(retry_after)) if retry_after and retry_after > 0 else 1
        self.llm_provider = llm_provider or FALLBACK_PROVIDER
        self.model = model or ""
        self.limit = limit
        self.remaining = remaining
        self.reset_seconds = reset_seconds if reset_seconds is not None else retry_after

    @property
    def exception_class(self) -> str:
        """The Prometheus ``exception_class`` label: ``Openai.ProxyRateLimitError``."""
        return f"{self.llm_provider.replace('_', ' ').title().replace(' ', '')}.ProxyRateLimitError"

    def tag(self, *, llm_provider: str | None, model: str | None) -> ProxyRateLimitError:
        """Fill in the provider/model tag if the raiser did not know it; never raises."""
        if llm_provider and self.llm_provider == FALLBACK_PROVIDER:
            self.llm_provider = llm_provider
        if model and not self.model:
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
        headers = {"retry-after": str(self.retry_after)}
        kind = "tokens" if self.limit_type == "tokens" else "requests"
        if self.limit is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(int(self.limit))
        if self.remaining is not None:
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(self.remaining)))
        headers[f"x-ratelimit-reset-{kind}"] = f"{max(0.0, float(self.reset_seconds or 0)):.3f}s"
        return headers


class LimiterUnavailableError(Exception):
    """The counter store did not answer in time and ``RATELIMIT_FAIL_MODE`` is "closed": HTTP 503.

    Same rendering interface as ``ProxyRateLimitError`` (``status_code``, ``to_body()``, ``headers()``,
    ``tag()``) so the proxy renders both the same way.
    """

    status_code = 503
    exception_class = "Gateway.LimiterUnavailableError"

    def __init__(self, message: str = "The gateway's rate limiter is unavailable; retry shortly.") -> None:
        super().__init__(message)
        self.message = message
        self.llm_provider = FALLBACK_PROVIDER
        self.model = ""

    def tag(self, *, llm_provider: str | None, model: str | None) -> LimiterUnavailableError:
        self.llm_provider = llm_provider or self.llm_provider
        self.model = model or self.model
        return self

    def to_body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": "service_unavailable",
                "code": "rate_limiter_unavailable",
                "param": None,
                "llm_provider": self.llm_provider,
                "model": self.model,
            }
        }

    def headers(self) -> dict[str, str]:
        return {"retry-after": "1"}
