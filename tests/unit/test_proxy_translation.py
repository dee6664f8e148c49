"""Provider translations against recorded-shape fixtures (the shapes the real APIs send and expect)."""

from __future__ import annotations

import orjson

from apps.proxy.providers.anthropic_format import (
    MessagesToChatStream,
    chat_to_messages_request,
    messages_to_chat_response,
)
from apps.proxy.providers.anthropic_reverse import (
    ChatToMessagesStream,
    chat_to_messages_response,
    messages_to_chat_request,
)
from apps.proxy.providers.base import Call, sse_events, upstream_error
from apps.proxy.providers.bedrock import BedrockAdapter, chat_to_converse
from apps.proxy.providers.gemini import GeminiAdapter, chat_to_gemini
from apps.proxy.registry import Deployment

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "w",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CHAT_WITH_TOOLS = {
    "model": "claude",
    "messages": [
        {"role": "system", "content": "be nice"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "rainy"},
        {"role": "user", "content": "thanks"},
    ],
    "tools": [WEATHER],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "stop": "END",
    "temperature": 0.2,
    "user": "end-user-7",
}
# Recorded Anthropic Messages response (text + tool_use, prompt caching).
ANTHROPIC_RESPONSE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-haiku-20241022",
    "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"city": "Oslo"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 472,
        "output_tokens": 89,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 100,
    },
}
ANTHROPIC_STREAM = [
    (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude",
                "stop_reason": None,
                "usage": {"input_tokens": 25, "output_tokens": 1},
            },
        },
    ),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}},
        },
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city":'}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ' "Oslo"}'}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 15}}),
    ("message_stop", {"type": "message_stop"}),
]


def dep(**kw) -> Deployment:
    return Deployment(**{"id": 1, "model_name": "pub", "provider": "gemini", "model": "up", **kw})


def test_chat_to_anthropic_request():
    out = chat_to_messages_request(CHAT_WITH_TOOLS, "claude-up")
    assert out["model"] == "claude-up" and out["system"] == "be nice" and out["max_tokens"] == 4096
    assert out["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}}],
    }
    # the tool result and the next user turn merge into one user message (Anthropic alternates roles)
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "rainy"},
        {"type": "text", "text": "thanks"},
    ]
    assert out["tools"][0]["input_schema"] == WEATHER["function"]["parameters"]
    assert out["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert out["stop_sequences"] == ["END"] and out["metadata"] == {"user_id": "end-user-7"}


def test_anthropic_response_to_chat():
    out = messages_to_chat_response(ANTHROPIC_RESPONSE, "claude-public")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Let me check."
    assert orjson.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}
    assert out["usage"] == {
        "prompt_tokens": 572,
        "completion_tokens": 89,
        "total_tokens": 661,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    assert out["model"] == "claude-public"


def test_anthropic_stream_to_chat_chunks():
    translator = MessagesToChatStream("pub", include_usage=True)
    chunks = [c for name, data in ANTHROPIC_STREAM for c in translator.event(name, data)]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "Hi"
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["id"] == "toolu_1" and calls[0]["function"]["name"] == "get_weather"
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city": "Oslo"}'
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["usage"] == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40}


def test_messages_request_to_chat_and_back():
    body = {
        "model": "pub",
        "max_tokens": 99,
        "system": [{"type": "text", "text": "sys"}],
        "stop_sequences": ["X"],
        "metadata": {"user_id": "u1"},
        "tools": [{"name": "t", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
    }
    chat = messages_to_chat_request(body)
    assert chat["messages"] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "ab"}]
    assert chat["max_tokens"] == 99 and chat["stop"] == ["X"] and chat["user"] == "u1"
    assert chat["tool_choice"] == "required" and chat["tools"][0]["function"]["name"] == "t"
    reply = {
        "choices": [
            {
                "message": {
                    "content": "hi",
                    "tool_calls": [{"id": "c1", "function": {"name": "t", "arguments": '{"a": 1}'}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }
    back = chat_to_messages_response(reply, "pub")
    assert back["content"] == [
        {"type": "text", "text": "hi"},
        {"type": "tool_use", "id": "c1", "name": "t", "input": {"a": 1}},
    ]
    assert back["stop_reason"] == "tool_use" and back["usage"] == {"input_tokens": 3, "output_tokens": 4}


def test_chat_chunks_to_anthropic_events():
    converter = ChatToMessagesStream("pub", prompt_estimate=5)
    chunks = [
        {"choices": [{"delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"delta": {"content": "He"}}]},
        {"choices": [{"delta": {"content": "llo"}}]},
        {
            "choices": [
                {"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "t", "arguments": ""}}]}}
            ]
        },
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":1}'}}]}}]},
        {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 9}},
    ]
    events = [e for c in chunks for e in converter.chunk(c)] + converter.end()
    names = [n for n, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use" and events[-2][1]["usage"] == {"output_tokens": 9}
    assert events[6][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"a":1}'}


def test_gemini_request_and_recorded_response():
    out = chat_to_gemini({**CHAT_WITH_TOOLS, "max_tokens": 20, "response_format": {"type": "json_object"}})
    assert out["systemInstruction"] == {"parts": [{"text": "be nice"}]}
    assert out["contents"][0]["parts"][1] == {"inline_data": {"mime_type": "image/png", "data": "AAAA"}}
    assert out["contents"][1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}],
    }
    assert out["contents"][2]["parts"][0]["functionResponse"]["name"] == "get_weather"
    assert out["generationConfig"] == {
        "temperature": 0.2,
        "maxOutputTokens": 20,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
    }
    recorded = {
        "candidates": [
            {
                "content": {"parts": [{"text": "It is "}, {"text": "rainy."}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 4, "totalTokenCount": 16},
        "modelVersion": "gemini-2.0-flash",
    }
    reply = GeminiAdapter().parse(dep(), Call("chat", {"model": "pub"}), orjson.dumps(recorded), "application/json")
    assert reply.obj["choices"][0]["message"]["content"] == "It is rainy."
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (12, 4)


def test_bedrock_converse_request_and_recorded_response():
    out = chat_to_converse({**CHAT_WITH_TOOLS, "tool_choice": "required", "max_tokens": 10})
    assert out["system"] == [{"text": "be nice"}]
    assert out["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "call_1", "name": "get_weather", "input": {"city": "Oslo"}}}
    ]
    assert out["messages"][2]["content"][0] == {"toolResult": {"toolUseId": "call_1", "content": [{"text": "rainy"}]}}
    assert out["inferenceConfig"] == {"maxTokens": 10, "temperature": 0.2, "stopSequences": ["END"]}
    assert out["toolConfig"]["toolChoice"] == {"any": {}}
    recorded = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [{"toolUse": {"toolUseId": "tooluse_x", "name": "get_weather", "input": {"city": "Oslo"}}}],
            }
        },
        "stopReason": "tool_use",
        "usage": {"inputTokens": 30, "outputTokens": 12, "totalTokens": 42},
        "metrics": {"latencyMs": 400},
    }
    reply = BedrockAdapter().parse(dep(provider="bedrock"), Call("chat", {"model": "pub"}), orjson.dumps(recorded), "")
    choice = reply.obj["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["tool_calls"][0]["id"] == "tooluse_x"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (30, 12)


def test_bedrock_request_is_sigv4_signed_without_network():
    adapter = BedrockAdapter()
    request = adapter.prepare(
        dep(
            provider="bedrock",
            model="amazon.nova-lite-v1:0",
            region="us-west-2",
            api_key="AKIDTEST:secretvalue:session-tok",
        ),
        Call("chat", {"messages": [{"role": "user", "content": "hi"}]}),
    )
    assert request.url == "https://bedrock-runtime.us-west-2.amazonaws.com/model/amazon.nova-lite-v1%3A0/converse"
    assert request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
    assert request.headers["X-Amz-Security-Token"] == "session-tok"


def test_sse_parser_handles_split_reads_crlf_and_named_events():
    buffer = bytearray()
    assert sse_events(buffer, b'data: {"a"') == []
    assert sse_events(buffer, b": 1}\n\nevent: ping\r\ndata: x\r\n\r\ndata: [DO") == [
        (None, b'{"a": 1}'),
        ("ping", b"x"),
    ]
    assert sse_events(buffer, b"NE]\n\n") == [(None, b"[DONE]")]


def test_upstream_errors_map_to_client_statuses():
    err = upstream_error("openai", 429, b'{"error": {"message": "quota"}}', {"retry-after": "12"})
    assert (err.status, err.retryable, err.headers["retry-after"], err.llm_provider) == (429, True, "12", "openai")
    assert upstream_error("openai", 503, b"", {}).status == 502
    assert upstream_error("openai", 504, b"", {}).status == 504
    assert upstream_error("openai", 401, b"", {}).status == 502
    bad = upstream_error("anthropic", 422, b'{"type": "error", "error": {"message": "nope"}}', {})
    assert (bad.status, bad.retryable, bad.message) == (400, False, "nope")
