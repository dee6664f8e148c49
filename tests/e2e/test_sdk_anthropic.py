"""``/v1/messages`` through the official ``anthropic`` SDK (base_url = the gateway), and the other
providers (Anthropic, Gemini, Bedrock, Azure) behind ``/v1/chat/completions`` through the ``openai`` SDK.
"""

from __future__ import annotations

import uuid

import anthropic
import orjson
import pytest
from openai import OpenAI

from tests.support.gateway import *  # noqa: F403
from tests.support.gateway import deploy

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather by city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
OPENAI_WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": WEATHER_TOOL["input_schema"]},
}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def models(gateway, upstream, tenant):
    names = {k: _name(k) for k in ("claude", "gpt", "gemini", "bedrock", "azure")}
    deploy(
        gateway,
        {
            "model_name": names["claude"],
            "provider": "anthropic",
            "model": "claude-up",
            "api_base": upstream.base,
            "api_key": "sk-ant-upstream",
        },
        {"model_name": names["gpt"], "provider": "openai", "model": "gpt-up", "api_base": upstream.url},
        {
            "model_name": names["gemini"],
            "provider": "gemini",
            "model": "gemini-up",
            "api_base": upstream.base + "/gemini",
            "api_key": "goog-key",
        },
        {
            "model_name": names["bedrock"],
            "provider": "bedrock",
            "model": "anthropic.claude-v2",
            "region": "eu-west-1",
            "api_base": upstream.base + "/bedrock",
            "api_key": "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG",
        },
        {
            "model_name": names["azure"],
            "provider": "azure",
            "model": "my-azure-dep",
            "api_base": upstream.base + "/azure",
            "api_version": "2024-10-21",
            "api_key": "azure-key",
        },
    )
    return names


@pytest.fixture
def claude(gateway, tenant):
    return anthropic.Anthropic(base_url=gateway.url, api_key=tenant.alice_key.secret, max_retries=0)


@pytest.fixture
def client(gateway, tenant):
    return OpenAI(base_url=gateway.v1, api_key=tenant.alice_key.secret, max_retries=0)


def test_messages_native_to_anthropic(claude, models, upstream):
    message = claude.messages.create(
        model=models["claude"], max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].text == "Hello from Claude"
    assert message.usage.input_tokens == 13
    sent = upstream.last("/v1/messages")
    assert sent["body"]["model"] == "claude-up"
    assert sent["headers"]["x-api-key"] == "sk-ant-upstream"
    assert sent["headers"]["anthropic-version"]


def test_messages_native_stream_and_tools(claude, models):
    with claude.messages.stream(
        model=models["claude"],
        max_tokens=50,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "weather in Paris?"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from Claude"
    tool_use = next(b for b in final.content if b.type == "tool_use")
    assert tool_use.name == "get_weather" and tool_use.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


def test_messages_translated_to_an_openai_deployment(claude, models, upstream):
    message = claude.messages.create(
        model=models["gpt"], max_tokens=50, system="be brief", messages=[{"role": "user", "content": "ping"}]
    )
    assert message.content[0].text == "echo: ping"
    assert message.usage.input_tokens == 11 and message.usage.output_tokens == 7
    sent = upstream.last("/chat/completions")["body"]
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["max_tokens"] == 50


def test_messages_translated_stream_with_tool_call(claude, models):
    with claude.messages.stream(
        model=models["gpt"], max_tokens=50, tools=[WEATHER_TOOL], messages=[{"role": "user", "content": "weather?"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: weather?"
    tool_use = next(b for b in final.content if b.type == "tool_use")
    assert tool_use.input == {"city": "Paris"} and final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 7


def test_messages_tool_result_roundtrip_translates_to_tool_message(claude, models, upstream):
    claude.messages.create(
        model=models["gpt"],
        max_tokens=20,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}}],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "sunny"}]},
        ],
    )
    sent = upstream.last("/chat/completions")["body"]["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert sent[2] == {"role": "tool", "tool_call_id": "toolu_9", "content": "sunny"}


def test_chat_completions_served_by_anthropic(client, models, upstream):
    completion = client.chat.completions.create(
        model=models["claude"],
        messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
        tools=[OPENAI_WEATHER_TOOL],
        tool_choice="required",
    )
    message = completion.choices[0].message
    assert message.content == "Hello from Claude"
    assert orjson.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage.prompt_tokens == 16 and completion.usage.completion_tokens == 5  # 13 + 3 cache reads
    sent = upstream.last("/v1/messages")["body"]
    assert sent["system"] == "sys" and sent["tool_choice"] == {"type": "any"}
    assert sent["tools"][0]["input_schema"] == WEATHER_TOOL["input_schema"]


def test_chat_stream_served_by_anthropic(client, models):
    chunks = list(
        client.chat.completions.create(
            model=models["claude"],
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from Claude"
    assert chunks[-1].usage.completion_tokens == 5


def test_gemini_chat_stream_and_embeddings(client, models, upstream):
    completion = client.chat.completions.create(model=models["gemini"], messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "Hello from Gemini"
    assert completion.usage.prompt_tokens == 9
    sent = upstream.last("/gemini/")
    assert sent["path"].endswith("/models/gemini-up:generateContent")
    assert sent["headers"]["x-goog-api-key"] == "goog-key"
    chunks = list(
        client.chat.completions.create(
            model=models["gemini"], messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from Gemini"
    tool = client.chat.completions.create(
        model=models["gemini"], messages=[{"role": "user", "content": "w?"}], tools=[OPENAI_WEATHER_TOOL]
    )
    assert tool.choices[0].message.tool_calls[0].function.name == "get_weather"
    embedded = client.embeddings.create(model=models["gemini"], input=["a", "b"])
    assert [d.embedding for d in embedded.data] == [[0.5, 0.25], [0.5, 0.25]]


def test_bedrock_converse_signed_with_sigv4(client, models, upstream):
    completion = client.chat.completions.create(model=models["bedrock"], messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "Hello from Bedrock"
    assert completion.usage.prompt_tokens == 8 and completion.usage.completion_tokens == 3
    sent = upstream.last("/bedrock/")
    assert sent["path"] == "/bedrock/model/anthropic.claude-v2/converse"
    auth = sent["headers"]["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") and "/eu-west-1/bedrock/aws4_request" in auth
    assert "wJalrXUtnFEMI" not in str(sent["headers"])
    chunks = list(
        client.chat.completions.create(
            model=models["bedrock"],
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from Bedrock"
    assert chunks[-1].usage.total_tokens == 11


def test_azure_deployment_path_version_and_key(client, models, upstream):
    completion = client.chat.completions.create(model=models["azure"], messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "echo: hi"
    sent = upstream.last("/azure/")
    assert sent["path"] == "/azure/openai/deployments/my-azure-dep/chat/completions?api-version=2024-10-21"
    assert sent["headers"]["api-key"] == "azure-key" and "Authorization" not in sent["headers"]
