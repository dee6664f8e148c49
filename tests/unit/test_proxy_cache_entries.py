"""The response cache's parts without a server: keys, client directives, stream assembly and replay, the
memory store (tests/e2e/test_proxy_cache_sdk.py runs them through a real gateway)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson

from apps.proxy.context import CallResult
from apps.proxy.response_cache.entries import Entry, StreamAssembler, replay_stream
from apps.proxy.response_cache.flow import CachePlan, ResponseCache
from apps.proxy.response_cache.keys import cache_key, directives
from apps.proxy.response_cache.store import MemoryStore

BODY = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}


def key(body: dict, org: int | None = 1, op: str = "chat", group: str = "gpt") -> str:
    return cache_key(organization_id=org, op=op, model_group=group, body=body)


def test_key_ignores_order_stream_and_bookkeeping_fields():
    reordered = {"temperature": 0.2, "messages": [{"content": "hi", "role": "user"}], "model": "alias-of-gpt"}
    noisy = {**BODY, "stream": True, "stream_options": {"include_usage": True}, "user": "u1", "metadata": {"a": 1}}
    assert key(BODY) == key(reordered) == key(noisy) == key({**BODY, "cache": {"no-cache": True}})


def test_key_keeps_everything_that_changes_the_answer():
    base = key(BODY)
    for change in ({"temperature": 0.3}, {"seed": 1}, {"n": 2}, {"tools": [{"type": "function"}]}, {"max_tokens": 5}):
        assert key({**BODY, **change}) != base, change
    assert key(BODY, org=2) != base  # never shared across organizations
    assert key(BODY, org=None) != base  # the master key's own space
    assert key(BODY, op="completions") != base
    assert key(BODY, group="other") != base


def test_directives_from_headers_and_the_litellm_body_form():
    assert directives({}, {}) == (True, True)
    assert directives({b"cache-control": b"no-cache"}, {}) == (False, True)
    assert directives({b"cache-control": b"max-age=0, No-Store"}, {}) == (False, False)
    assert directives({}, {"cache": {"no-cache": True}}) == (False, True)
    assert directives({}, {"cache": {"no-store": True}}) == (False, False)
    assert directives({}, {"cache": "no-store"}) == (True, True)  # not the object form: ignored


def chunk(delta: dict, finish: str | None = None, index: int = 0) -> dict:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


def test_a_stream_assembles_into_the_whole_answer_and_replays_as_the_same_stream():
    assembler = StreamAssembler("chat", max_bytes=1000)
    for obj in (
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "hello "}),
        chunk({"content": "world"}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        chunk({}, "tool_calls"),
    ):
        assembler.add(obj)
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    answer = orjson.loads(assembler.result(usage))
    message = answer["choices"][0]["message"]
    assert answer["object"] == "chat.completion" and answer["usage"] == usage
    assert message["content"] == "hello world"
    assert message["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]
    events = replay_stream("chat", orjson.dumps(answer), include_usage=True).split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    replayed = [orjson.loads(e[len(b"data: ") :]) for e in events[:-2]]
    assert replayed[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in replayed if c["choices"])
    assert text == "hello world"
    assert replayed[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert replayed[-1]["choices"] == [] and replayed[-1]["usage"] == usage
    without_usage = replay_stream("chat", orjson.dumps(answer), include_usage=False)
    assert b'"usage"' not in without_usage


def test_a_cut_short_or_oversized_stream_is_not_assembled():
    cut = StreamAssembler("chat", max_bytes=1000)
    cut.add(chunk({"content": "half"}))
    assert cut.result({}) is None  # no finish_reason
    big = StreamAssembler("chat", max_bytes=10)
    big.add(chunk({"content": "x" * 11}))
    big.add(chunk({}, "stop"))
    assert big.result({}) is None
    logprobs = StreamAssembler("chat", max_bytes=1000)
    logprobs.add({**chunk({"content": "a"}), "choices": [{"index": 0, "delta": {}, "logprobs": {"content": []}}]})
    logprobs.add(chunk({}, "stop"))
    assert logprobs.result({}) is None


def test_completions_replay():
    answer = {
        "id": "x",
        "object": "text_completion",
        "choices": [{"index": 0, "text": " done", "finish_reason": "stop"}],
    }
    events = replay_stream("completions", orjson.dumps(answer), include_usage=False).split(b"\n\n")
    first = orjson.loads(events[0][len(b"data: ") :])
    assert first["choices"][0]["text"] == " done" and events[-2] == b"data: [DONE]"


def test_entries_round_trip_and_damaged_values_read_as_misses():
    entry = Entry(b'{"a": 1}', Decimal("0.000025"), 11, 7)
    assert Entry.decode(entry.encode()) == entry
    assert Entry.decode(b"not json") is None and Entry.decode(b'{"v": 99, "body": ""}') is None


def test_memory_store_expires_and_evicts_the_least_recently_used():
    now = [0.0]
    store = MemoryStore(max_bytes=10, clock=lambda: now[0])

    async def run():
        await store.set("a", b"12345", 5)
        await store.set("b", b"12345", 5)
        assert await store.get("a") == (b"12345", True)  # a is now the most recent
        await store.set("c", b"123", 5)  # over 10 bytes: b (least recently used) goes
        assert await store.get("b") == (None, True)
        assert (await store.get("a"))[0] and (await store.get("c"))[0]
        now[0] = 6.0
        assert await store.get("a") == (None, True)  # expired
        await store.set("big", b"x" * 11, 5)  # larger than the whole store: not kept
        assert await store.get("big") == (None, True)

    asyncio.run(run())


def test_answers_larger_than_the_bound_are_not_kept_and_no_store_keeps_nothing():
    cache = ResponseCache(MemoryStore(1 << 20), max_entry_bytes=100)

    def plan(name: str, write: bool = True) -> CachePlan:
        return CachePlan(key=name, ttl=60, read=True, write=write, op="chat", stream=False, include_usage=False)

    async def run():
        await cache.keep(plan("small"), b'{"a": 1}', CallResult(200, cost=Decimal("0.5")))
        await cache.keep(plan("big"), b"x" * 101, CallResult(200))
        await cache.keep(plan("unwritable", write=False), b'{"a": 1}', CallResult(200))
        hit = await cache.lookup(plan("small"), "/v1/chat/completions")
        assert hit is not None and hit.body == b'{"a": 1}' and hit.entry.cost == Decimal("0.5")
        assert await cache.lookup(plan("big"), "/v1/chat/completions") is None
        assert await cache.lookup(plan("unwritable"), "/v1/chat/completions") is None

    asyncio.run(run())
