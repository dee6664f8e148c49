"""Provider adapters by ``ModelDeployment.provider`` value."""

from __future__ import annotations

from django.conf import settings

from apps.proxy.providers.anthropic import AnthropicAdapter
from apps.proxy.providers.base import Adapter, Call, Chunk, Reply, StreamReply, Usage
from apps.proxy.providers.bedrock import BedrockAdapter
from apps.proxy.providers.gemini import GeminiAdapter
from apps.proxy.providers.mock import MockAdapter
from apps.proxy.providers.openai import AzureAdapter, OpenAIAdapter, OpenAICompatibleAdapter

__all__ = ["Adapter", "Call", "Chunk", "Reply", "StreamReply", "Usage", "adapter_for", "build_adapters"]


def build_adapters() -> dict[str, Adapter]:
    adapters: list[Adapter] = [
        OpenAIAdapter(),
        OpenAICompatibleAdapter(),
        AzureAdapter(),
        AnthropicAdapter(),
        GeminiAdapter(),
        BedrockAdapter(),
        MockAdapter(),
    ]
    limit = getattr(settings, "PROXY_MAX_RESPONSE_BYTES", None)
    for adapter in adapters:
        if limit:
            adapter.max_response_bytes = limit
    return {adapter.name: adapter for adapter in adapters}


_DEFAULT = build_adapters()


def adapter_for(provider: str) -> Adapter | None:
    return _DEFAULT.get(provider)
