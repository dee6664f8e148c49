"""OpenAI response shapes that every translating adapter (Anthropic, Bedrock, Gemini, mock) answers with."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from typing import Any


def openai_usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    """The ``usage`` object of an OpenAI answer."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def chat_completion(model: str, choices: list[dict[str, Any]], usage: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` object: what every translating adapter answers with."""
    return {
        "id": "chatcmpl-" + str(extra.pop("id", None) or uuid.uuid4().hex),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        **extra,
        "choices": choices,
        "usage": usage,
    }


def embedding_vector(values: list[float], encoding_format: Any) -> list[float] | str:
    """One embedding as the client asked for it.

    The official SDKs ask for ``base64`` (little-endian float32) unless told otherwise, and the JS SDK decodes
    whatever it gets as base64, so an adapter that builds the answer itself must encode it when asked.
    """
    if encoding_format != "base64":
        return values
    try:
        packed = struct.pack(f"<{len(values)}f", *values)
    except (struct.error, TypeError):
        return values  # not a vector of numbers: relay what the upstream sent
    return base64.b64encode(packed).decode()


def append_turn(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Add content blocks as a turn of ``role``; Anthropic and Bedrock need consecutive same-role turns merged."""
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})
