"""Reads for the live traffic page: the most recent finished requests the viewer may see."""

from __future__ import annotations

from typing import Any

from apps.spend.models import SpendLog


def recent_requests(user, *, limit: int = 50) -> list[dict[str, Any]]:
    """The page's first rows, shaped like the websocket rows (apps/spend/live.py ``live_row``)."""
    rows = []
    for log in SpendLog.objects.restrict(user).order_by("-created_at")[:limit]:
        rows.append(
            {
                "request_id": log.request_id,
                "time": log.created_at.timestamp(),
                "created_at": log.created_at,
                "key_alias": log.key_alias or (f"key #{log.key_id}" if log.key_id else "master key"),
                "model": log.model,
                "status": log.status,
                "latency_ms": round(log.latency_ms or 0, 1),
                "cost": str(log.cost),
                "tokens": (log.prompt_tokens or 0) + (log.completion_tokens or 0),
                "limit_type": log.limit_type,
                "error_type": log.error_type,
            }
        )
    return rows
