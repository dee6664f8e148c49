"""Anthropic: ``/v1/messages`` natively, ``/v1/chat/completions`` through translation (tools and streaming too)."""

from __future__ import annotations

import aiohttp
import orjson

from apps.proxy.errors import UpstreamError
from apps.proxy.providers.anthropic_format import (
    MessagesToChatStream,
    cache_write_tokens,
    chat_to_messages_request,
    messages_to_chat_response,
    messages_usage,
)
from apps.proxy.providers.base import Adapter, Call, Chunk, HttpRequest, Reply, Usage, json_or_502
from apps.proxy.registry import Deployment

DEFAULT_BASE = "https://api.anthropic.com"
API_VERSION = "2023-06-01"


class AnthropicAdapter(Adapter):
    name = "anthropic"
    ops = frozenset({"chat"})
    native_ops = frozenset({"messages", "messages_count_tokens"})

    def prepare(self, dep: Deployment, call: Call) -> HttpRequest:
        base = dep.api_base or DEFAULT_BASE
        if base.endswith("/v1"):
            base = base[:-3]
        headers = {
            "x-api-key": dep.api_key,
            "anthropic-version": str(dep.extra.get("anthropic_version", API_VERSION)),
            "content-type": "application/json",
        }
        if call.anthropic_beta:
            headers["anthropic-beta"] = call.anthropic_beta
        if call.op == "messages_count_tokens":
            body = {**call.body, "model": dep.model}
            return HttpRequest("POST", base + "/v1/messages/count_tokens", headers, orjson.dumps(body))
        if call.op == "messages":
            body = {**call.body, "model": dep.model}
        else:
            body = chat_to_messages_request(call.body, dep.model)
        return HttpRequest("POST", base + "/v1/messages", headers, orjson.dumps(body))

    def parse(self, dep: Deployment, call: Call, raw: bytes, content_type: str) -> Reply:
        obj = json_or_502(raw, self.name)
        if not isinstance(obj, dict):
            obj = {}
        if call.op == "messages_count_tokens":
            return Reply(body=raw, usage=Usage(reported=True), obj=obj)
        usage = Usage(reported=bool(obj.get("usage")))
        usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens = messages_usage(obj.get("usage"))
        usage.cache_write_tokens = cache_write_tokens(obj.get("usage"))
        if call.op == "messages":
            return Reply(body=raw, usage=usage, obj=obj)
        translated = messages_to_chat_response(obj, str(call.body.get("model", dep.model_name)))
        return Reply(body=orjson.dumps(translated), usage=usage, obj=translated)

    async def stream_chunks(self, dep: Deployment, call: Call, response: aiohttp.ClientResponse, usage: Usage):
        translator = (
            None
            if call.op == "messages"
            else MessagesToChatStream(str(call.body.get("model", dep.model_name)), call.include_usage)
        )
        async for name, data in self.sse(response):
            obj = json_or_502(data, self.name)
            if not isinstance(obj, dict):
                continue
            kind = obj.get("type", name)
            if kind == "message_start":
                start_usage = (obj.get("message") or {}).get("usage")
                usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens = messages_usage(start_usage)
                usage.cache_write_tokens = cache_write_tokens(start_usage)
                usage.reported = True
            elif kind == "message_delta" and (obj.get("usage") or {}).get("output_tokens") is not None:
                usage.completion_tokens = int(obj["usage"]["output_tokens"])
            elif kind == "error":
                message = str((obj.get("error") or {}).get("message", "upstream stream error"))
                raise UpstreamError(502, message, llm_provider=self.name, kind="upstream_error")
            if translator is None:
                yield (kind, data)
            else:
                for chunk in translator.event(name, obj):
                    yield Chunk(chunk)
