"""The spend event: one per finished /v1 request, appended to the outbox, ingested by Celery workers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson


@dataclass(slots=True)
class SpendEvent:
    request_id: str  # UNIQUE in the ledger: replays change nothing
    created_at: float  # epoch seconds when the request finished
    route: str
    status: int
    model: str = ""
    llm_provider: str = ""
    deployment_id: int | None = None
    organization_id: int | None = None
    team_id: int | None = None
    key_id: int | None = None
    key_alias: str = ""
    user_id: int | None = None
    customer_id: str | None = None  # the end user's external id
    session_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cost: str = "0"  # Decimal as a string: exact
    latency_ms: float = 0.0  # total, from the request's arrival to the end of its answer
    ttft_ms: float | None = None
    # The gateway's own time (the latency minus the upstream attempts; for a stream, up to its head):
    # the x-gateway-overhead-ms header's value. None for requests that never reached the model path.
    overhead_ms: float | None = None
    upstream_ttfb_ms: float | None = None  # the last attempt's time until the upstream's response head
    retries: int = 0  # attempts after the first (failover to another deployment, or a retry)
    error_type: str | None = None  # e.g. "rate_limit:requests", "upstream_timeout", "client_disconnect"
    limit_type: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    trace_id: str = ""  # the OpenTelemetry trace (32 hex) when the request was traced, else ""
    cache_hit: bool = False  # answered from the response cache: cost is 0, cost_saved what the upstream charged
    cost_saved: str = "0"
    # Each guardrail's outcome: {"pii": {"request": "masked", "answer": "passed", "categories": ["email"]}};
    # None when no guardrail ran (apps/guardrails). Entity types and categories only, never the text.
    guardrails: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> SpendEvent:
        data = orjson.loads(raw)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
