"""JSON-RPC 2.0 framing for /mcp: the error codes the gateway answers with and the response shapes."""

from __future__ import annotations

from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Implementation-defined server errors (-32000..-32099), each with an HTTP status of its own:
UNAUTHORIZED = -32001  # HTTP 401: no, unknown or revoked key
UPSTREAM_ERROR = -32002  # HTTP 200: the upstream MCP server failed or timed out (data.status 502/504)
RATE_LIMITED = -32029  # HTTP 429: a limiter refused the tool call; data is the gateway's 429 error object
FORBIDDEN = -32003  # HTTP 403: e.g. a browser Origin that is not allowed


class RpcError(Exception):
    """Answered as a JSON-RPC error (with ``status`` as the HTTP status of the POST)."""

    def __init__(self, code: int, message: str, *, status: int = 200, data: Any = None, headers=None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.data = data
        self.headers: dict[str, str] = headers or {}

    def body(self, request_id: Any) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return {"jsonrpc": "2.0", "id": request_id, "error": error}


def result_body(request_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}
