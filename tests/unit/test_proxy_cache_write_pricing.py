"""Anthropic prompt-cache writes: billed at the cache-write price, while the usage clients see stays as it was."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson

from apps.proxy.pricing import call_cost, price_for
from apps.proxy.providers.anthropic import AnthropicAdapter
from apps.proxy.providers.base import Call, Usage
from apps.proxy.registry import Deployment

M = Decimal("0.000001")
USAGE = {
    "input_tokens": 100,
    "cache_creation_input_tokens": 1000,
    "cache_read_input_tokens": 2000,
    "output_tokens": 50,
}
ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-20250514",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "usage": USAGE,
}


def claude(**kw) -> Deployment:
    return Deployment(
        **{"id": 901, "model_name": "claude", "provider": "anthropic", "model": "claude-sonnet-4-20250514", **kw}
    )


def cost(dep: Deployment, usage: Usage) -> Decimal:
    return call_cost(
        price_for(dep),
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
    )


def test_native_messages_usage_is_relayed_unchanged_and_writes_are_counted_apart():
    raw = orjson.dumps(ANSWER)
    reply = AnthropicAdapter().parse(claude(), Call("messages", {"model": "claude"}), raw, "application/json")
    assert reply.body == raw  # what the client reads: Anthropic's own numbers
    usage = reply.usage
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens) == (3100, 2000, 1000)


def test_translated_chat_usage_is_unchanged():
    reply = AnthropicAdapter().parse(
        claude(), Call("chat", {"model": "claude"}), orjson.dumps(ANSWER), "application/json"
    )
    usage = orjson.loads(reply.body)["usage"]
    assert usage["prompt_tokens"] == 3100 and usage["completion_tokens"] == 50
    assert usage["prompt_tokens_details"] == {"cached_tokens": 2000}
    assert reply.usage.cache_write_tokens == 1000


def test_cache_writes_cost_1_25x_input_for_claude():
    usage = AnthropicAdapter().parse(claude(), Call("messages", {}), orjson.dumps(ANSWER), "").usage
    # claude-sonnet-4: 3 in, 15 out, 0.30 cache read, and writes at 1.25 x 3 = 3.75 (USD per million).
    expected = 100 * 3 * M + 2000 * Decimal("0.30") * M + 1000 * Decimal("3.75") * M + 50 * 15 * M
    assert cost(claude(), usage) == expected
    # The deployment's own input price moves the default write price with it.
    assert cost(claude(input_cost_per_token=Decimal("0.00001")), usage) == (
        100 * Decimal("0.00001") + 2000 * Decimal("0.30") * M + 1000 * Decimal("0.0000125") + 50 * 15 * M
    )


def test_the_deployments_cache_creation_price_wins():
    usage = AnthropicAdapter().parse(claude(), Call("messages", {}), orjson.dumps(ANSWER), "").usage
    dep = claude(id=902, cache_creation_input_token_cost=Decimal("0.000006"))
    expected = 100 * 3 * M + 2000 * Decimal("0.30") * M + 1000 * 6 * M + 50 * 15 * M
    assert cost(dep, usage) == expected


def test_other_models_bill_cache_writes_at_the_input_price():
    dep = Deployment(id=903, model_name="g", provider="openai", model="gpt-4o")
    usage = Usage(prompt_tokens=3100, completion_tokens=50, cached_tokens=2000, cache_write_tokens=1000)
    expected = 1100 * Decimal("2.50") * M + 2000 * Decimal("1.25") * M + 50 * 10 * M
    assert cost(dep, usage) == expected


def test_streamed_message_start_reports_cache_writes():
    adapter = AnthropicAdapter()
    start = {"type": "message_start", "message": {**ANSWER, "content": [], "usage": {**USAGE, "output_tokens": 1}}}
    events = [
        ("message_start", start),
        ("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 50}}),
        ("message_stop", {"type": "message_stop"}),
    ]

    async def sse(_response):
        for name, obj in events:
            yield name, orjson.dumps(obj)

    adapter.sse = sse
    usage = Usage()

    async def drain():
        return [chunk async for chunk in adapter.stream_chunks(claude(), Call("messages", {}), None, usage)]

    relayed = asyncio.run(drain())
    assert [orjson.loads(data)["type"] for _name, data in relayed] == ["message_start", "message_delta", "message_stop"]
    assert (usage.prompt_tokens, usage.cached_tokens, usage.cache_write_tokens, usage.completion_tokens) == (
        3100,
        2000,
        1000,
        50,
    )
