"""What the provider pass-through may relay (apps/proxy/passthrough_rules.py) and realtime prices (pricing.py)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.proxy.errors import GatewayError
from apps.proxy.passthrough_rules import (
    NATIVES,
    path_model,
    path_segments,
    query_key,
    take_usage,
    upstream_path,
    upstream_query,
)
from apps.proxy.pricing import price_for, realtime_cost
from apps.proxy.providers.base import Usage
from tests.unit.proxy_support import dep

GEMINI, OPENAI, ANTHROPIC = NATIVES["gemini"], NATIVES["openai"], NATIVES["anthropic"]


@pytest.mark.parametrize(
    "path",
    [
        b"/openai/v1/../admin",
        b"/openai/v1/./files",
        b"/openai/v1/%2e%2e/admin",
        b"/openai/v1/files%2Fx",
        b"/openai//evil.example/v1",
        b"/openai/https://evil.example/v1",
        b"/openai/v1/files\\..\\x",
        b"/openai/v1/files?x",
        b"/openai/v1/a b",
    ],
)
def test_paths_that_could_leave_the_base_are_400(path):
    with pytest.raises(GatewayError) as refused:
        path_segments(OPENAI, path)
    assert refused.value.status == 400 and refused.value.code == "invalid_path"


def test_the_first_segment_must_be_an_api_version_of_the_provider():
    assert path_segments(OPENAI, b"/openai/v1/files/file-1/") == ["v1", "files", "file-1"]
    with pytest.raises(GatewayError) as unknown:
        path_segments(OPENAI, b"/openai/admin/x")
    assert unknown.value.status == 404
    assert path_segments(GEMINI, b"/gemini/v1beta/models/gemini-2.0-flash:generateContent")[0] == "v1beta"


def test_gemini_path_model_is_replaced_by_the_deployment_model():
    parts = path_segments(GEMINI, b"/gemini/v1beta/models/my-gemini:streamGenerateContent")
    assert path_model(GEMINI, parts) == "my-gemini"
    assert upstream_path(GEMINI, parts, "gemini-2.5-pro") == "/v1beta/models/gemini-2.5-pro:streamGenerateContent"
    assert path_model(OPENAI, ["v1", "models", "x"]) is None


def test_base_url_loses_its_version_segment_and_query_loses_credentials():
    assert GEMINI.base(dep(1, provider="gemini")) == "https://generativelanguage.googleapis.com"
    assert OPENAI.base(dep(2, api_base="http://10.0.0.1:8000/v1/")) == "http://10.0.0.1:8000"
    assert ANTHROPIC.base(dep(3, provider="anthropic")) == "https://api.anthropic.com"
    assert upstream_query(b"alt=sse&key=sk-client&api_key=x") == "?alt=sse"
    assert upstream_query(b"key=sk-client") == ""
    assert query_key(b"alt=sse&key=sk-client") == "sk-client"


def test_usage_as_each_provider_reports_it():
    usage = Usage()
    take_usage("gemini", [{"usageMetadata": {"promptTokenCount": 3}}, {"usageMetadata": {"promptTokenCount": 9,
               "candidatesTokenCount": 4, "thoughtsTokenCount": 2}}], usage)  # fmt: skip
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reported) == (9, 6, True)
    usage = Usage()
    take_usage("anthropic", {"type": "message_start", "message": {"usage": {"input_tokens": 10,
               "cache_read_input_tokens": 5, "output_tokens": 1}}}, usage)  # fmt: skip
    take_usage("anthropic", {"type": "message_delta", "usage": {"output_tokens": 42}}, usage)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (15, 42, 5)
    usage = Usage()
    take_usage(
        "openai", {"type": "response.completed", "response": {"usage": {"input_tokens": 7, "output_tokens": 8}}}, usage
    )
    assert (usage.prompt_tokens, usage.completion_tokens) == (7, 8)


def test_realtime_cost_prices_audio_and_cached_tokens_apart():
    price = price_for(dep(10, model="gpt-realtime"))
    cost = realtime_cost(
        price, text_in=1_000_000, audio_in=1_000_000, cached_text_in=0, cached_audio_in=1_000_000,
        text_out=1_000_000, audio_out=1_000_000,
    )  # fmt: skip
    # A million tokens of each: text in 4 USD, cached audio in 0.40, text out 16, audio out 64 (no uncached audio).
    assert cost == Decimal("4") + Decimal("0.40") + Decimal("16") + Decimal("64")
    # A model without audio prices bills audio tokens as text.
    text_only = price_for(dep(11, model="gpt-4o"))
    assert (
        realtime_cost(text_only, text_in=0, audio_in=100, cached_text_in=0, cached_audio_in=0, text_out=0, audio_out=10)
        == 100 * text_only.input + 10 * text_only.output
    )
    # Deployment extra overrides the audio prices.
    custom = price_for(dep(12, model="gpt-realtime", extra={"audio_output_cost_per_token": "0.001"}))
    assert custom.audio_output == Decimal("0.001")
