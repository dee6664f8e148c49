"""Cheap request inspection for the hot path: token estimates (chars / 4) and forbidden fields.

No tokenizer: nothing may be downloaded at run time, and the limiters only need a reservation that
the real usage reconciles afterwards.
"""

from __future__ import annotations

import re
from typing import Any

from apps.proxy.errors import bad_request

# Fields that would let a client pick the upstream or its credentials (LiteLLM-style passthrough).
FORBIDDEN_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "azure_endpoint",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "aws_region_name",
        "vertex_credentials",
        "custom_llm_provider",
    }
)
# As a JSON key is written: quoted (anchoring on the quote makes the scan ~5x faster than a bare alternation).
_FORBIDDEN_KEY = re.compile(b'"(?:' + "|".join(re.escape(name) for name in sorted(FORBIDDEN_FIELDS)).encode() + b')"')
# JSON-schema subtrees name the *tool's* parameters; a tool may well have a "base_url" argument.
_SCHEMA_KEYS = frozenset({"parameters", "input_schema", "json_schema", "schema"})


# orjson parses up to 1024 levels; the walk stops well before Python's recursion limit and refuses what
# it cannot see the end of (returning "nothing found" there let a nested "api_base" through).
_MAX_SCAN_DEPTH = 200
_TOO_DEEP = "\0too deep"


def _scan(value: Any, depth: int = 0) -> str | None:
    if depth > _MAX_SCAN_DEPTH:
        return _TOO_DEEP
    if isinstance(value, dict):
        for key, item in value.items():
            if key in FORBIDDEN_FIELDS:
                return key
            if key in _SCHEMA_KEYS:
                continue
            found = _scan(item, depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for item in value:
            found = _scan(item, depth + 1)
            if found:
                return found
    return None


def reject_client_upstream(raw: bytes, body: dict[str, Any]) -> None:
    """400 when the body tries to set an upstream URL or credential anywhere in it."""
    if _FORBIDDEN_KEY.search(raw) is None and b"\\u" not in raw:
        return  # the common case: one scan of the raw bytes, no tree walk
    # (A JSON escape can spell a name without its raw bytes, e.g. "api\u005fbase": walk the parsed tree.)
    found = _scan(body)
    if found == _TOO_DEEP:
        raise bad_request("The request body is nested too deeply.", code="too_deep")
    if found:
        raise _forbidden(found)


def reject_client_upstream_form(names: Any) -> None:
    """The same rule for multipart uploads: no form field may name an upstream URL or credential."""
    for name in names:
        if name in FORBIDDEN_FIELDS:
            raise _forbidden(name)


def _forbidden(name: str):
    return bad_request(f"The field '{name}' cannot be set by clients.", param=name, code="forbidden_field")


def estimate_text_tokens(text: str) -> int:
    return (len(text) + 3) // 4 if text else 0


def _content_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    total += len(part["text"])
                elif part.get("type") in ("image_url", "image", "input_image"):
                    total += 85 * 4  # a low-detail image's token count
            elif isinstance(part, str):
                total += len(part)
        return total
    return 0


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens of any /v1 body: messages, prompt, input (strings or lists), system, tools."""
    chars = 0
    messages = body.get("messages")  # (only chat and messages require a list; elsewhere it is any JSON)
    for message in messages if isinstance(messages, list) else ():
        if isinstance(message, dict):
            chars += _content_chars(message.get("content")) + 4
            calls = message.get("tool_calls")
            if calls and isinstance(calls, list):  # (a client's 5 or true here is the upstream's to refuse)
                for call in calls:
                    if isinstance(call, dict):
                        chars += len(str(call.get("function", "")))
    for key in ("prompt", "input", "system", "query", "instructions"):
        value = body.get(key)
        if isinstance(value, str):
            chars += len(value)
        elif isinstance(value, list):
            chars += sum(
                _content_chars(v)
                if isinstance(v, list | str)
                else _content_chars(v.get("content"))
                if isinstance(v, dict)
                else 0
                for v in value
            )
    documents = body.get("documents")
    if isinstance(documents, list):
        chars += sum(len(d) if isinstance(d, str) else len(str(d)) for d in documents)
    if body.get("tools"):
        chars += len(str(body["tools"]))
    return (chars + 3) // 4


MAX_TOKEN_FIELDS = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def requested_max_tokens(body: dict[str, Any], default: int) -> int:
    found = explicit_max_tokens(body)
    return default if found is None else found


def explicit_max_tokens(body: dict[str, Any]) -> int | None:
    """The output cap the client set (OpenAI chat's two names, Responses' and Anthropic's), if any."""
    for key in MAX_TOKEN_FIELDS:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def set_max_tokens(body: dict[str, Any], route: str, provider: str, value: int) -> None:
    """Lower the body's output cap to ``value`` (a budget clamp): every cap field the client set, else the
    route's own field, so whichever one the upstream (or a translating adapter) reads says ``value``."""
    present = [key for key in MAX_TOKEN_FIELDS if isinstance(body.get(key), int) and not isinstance(body[key], bool)]
    for key in present:
        body[key] = min(body[key], value) if body[key] > 0 else value
    if present:
        return
    if route == "/v1/responses":
        body["max_output_tokens"] = value
    elif route == "/v1/chat/completions" and provider in ("openai", "azure"):
        body["max_completion_tokens"] = value  # OpenAI's reasoning models refuse max_tokens
    else:
        body["max_tokens"] = value
