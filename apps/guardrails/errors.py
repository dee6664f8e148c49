"""A guardrail's refusal, in the OpenAI error shape with the guardrail and the category named.

``{"error": {"message": ..., "type": "guardrail_error", "code": "guardrail_blocked", "param": null,
"guardrail": "pii", "category": "payment_card"}}`` with status 400; a classifier that failed under a
fail-closed policy answers 503 with ``code: "guardrail_unavailable"``.
"""

from __future__ import annotations

from typing import Any

from apps.proxy.errors import GatewayError

GUARDRAIL_ERROR = "guardrail_error"


class GuardrailError(GatewayError):
    def __init__(self, guardrail: str, category: str, message: str, *, status: int = 400, code: str = "") -> None:
        super().__init__(
            status,
            message,
            code=code or ("guardrail_blocked" if status == 400 else "guardrail_unavailable"),
            error_type=GUARDRAIL_ERROR,
            kind=f"guardrail:{guardrail}",
            headers={"retry-after": "1"} if status == 503 else None,
        )
        self.guardrail = guardrail
        self.category = category

    def to_body(self) -> dict[str, Any]:
        body = super().to_body()
        body["error"]["guardrail"] = self.guardrail
        body["error"]["category"] = self.category
        return body
