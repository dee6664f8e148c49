"""AWS Bedrock through the Converse API (chat, tools, streaming), signed with SigV4 by botocore.

Credentials are the deployment's api_key: ``AKID:SECRET`` or ``AKID:SECRET:SESSION_TOKEN`` or a JSON
object with ``aws_access_key_id``/``aws_secret_access_key``/``aws_session_token``. botocore is
imported on first use only: nothing touches the network or the AWS config chain at import.
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from apps.proxy.errors import UpstreamError
from apps.proxy.providers.anthropic_format import _arguments, _text_of
from apps.proxy.providers.base import (
    Adapter,
    Call,
    Chunk,
    HttpRequest,
    Reply,
    Usage,
    json_or_502,
    malformed,
)
from apps.proxy.providers.shapes import append_turn, chat_completion, openai_usage
from apps.proxy.registry import Deployment

STOP = {
    "end_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "stop_sequence": "stop",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}


def _credentials(api_key: str) -> tuple[str, str, str | None]:
    """``ACCESS_KEY:SECRET[:SESSION_TOKEN]`` or a JSON object with the ``aws_*`` names."""
    malformed = UpstreamError(
        502, "Bedrock deployment credentials are malformed.", llm_provider="bedrock", kind="config"
    )
    if api_key.startswith("{"):
        try:
            data = orjson.loads(api_key)
            return str(data["aws_access_key_id"]), str(data["aws_secret_access_key"]), data.get("aws_session_token")
        except (ValueError, KeyError, TypeError):
            raise malformed from None
    parts = api_key.split(":")
    if len(parts) < 2:
        raise malformed
    return parts[0], parts[1], parts[2] if len(parts) > 2 else None


def chat_to_converse(body: dict[str, Any]) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    system = []

    for message in body.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append({"text": _text_of(message.get("content"))})
        elif role == "user":
            append_turn(messages, "user", [{"text": _text_of(message.get("content")) or " "}])
        elif role == "assistant":
            blocks: list[dict[str, Any]] = [{"text": t} for t in [_text_of(message.get("content"))] if t]
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                blocks.append(
                    {
                        "toolUse": {
                            "toolUseId": call.get("id"),
                            "name": fn.get("name"),
                            "input": _arguments(fn.get("arguments")),
                        }
                    }
                )
            append_turn(messages, "assistant", blocks or [{"text": " "}])
        elif role == "tool":
            append_turn(
                messages,
                "user",
                [
                    {
                        "toolResult": {
                            "toolUseId": message.get("tool_call_id"),
                            "content": [{"text": _text_of(message.get("content"))}],
                        }
                    }
                ],
            )
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    config: dict[str, Any] = {}
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    for key, value in (
        ("maxTokens", max_tokens),
        ("temperature", body.get("temperature")),
        ("topP", body.get("top_p")),
    ):
        if value is not None:
            config[key] = value
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if config:
        out["inferenceConfig"] = config
    tools = [t["function"] for t in body.get("tools") or [] if t.get("type") == "function" and t.get("function")]
    if tools:
        tool_config: dict[str, Any] = {
            "tools": [
                {
                    "toolSpec": {
                        "name": f.get("name"),
                        "description": f.get("description") or f.get("name"),
                        "inputSchema": {"json": f.get("parameters") or {"type": "object"}},
                    }
                }
                for f in tools
            ]
        }
        choice = body.get("tool_choice")
        if choice == "required":
            tool_config["toolChoice"] = {"any": {}}
        elif isinstance(choice, dict) and choice.get("type") == "function":
            tool_config["toolChoice"] = {"tool": {"name": (choice.get("function") or {}).get("name")}}
        elif choice == "auto":
            tool_config["toolChoice"] = {"auto": {}}
        out["toolConfig"] = tool_config
    return out


class BedrockAdapter(Adapter):
    name = "bedrock"
    ops = frozenset({"chat"})

    def prepare(self, dep: Deployment, call: Call) -> HttpRequest:
        # botocore is heavy (0.1-0.5 s to import here): loaded by the first Bedrock call, not by every worker.
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        region = dep.region or "us-east-1"
        base = dep.api_base or f"https://bedrock-runtime.{region}.amazonaws.com"
        action = "converse-stream" if call.stream else "converse"
        url = f"{base}/model/{quote(dep.model, safe='')}/{action}"
        payload = orjson.dumps(chat_to_converse(call.body))
        request = AWSRequest(method="POST", url=url, data=payload, headers={"content-type": "application/json"})
        SigV4Auth(Credentials(*_credentials(dep.api_key)), "bedrock", region).add_auth(request)
        return HttpRequest("POST", url, dict(request.headers.items()), payload)

    def parse(self, dep: Deployment, call: Call, raw: bytes, content_type: str) -> Reply:
        obj = json_or_502(raw, self.name)
        obj = obj if isinstance(obj, dict) else {}
        usage = Usage(reported=True)
        meta = obj.get("usage") or {}
        usage.prompt_tokens = int(meta.get("inputTokens") or 0)
        usage.completion_tokens = int(meta.get("outputTokens") or 0)
        usage.cached_tokens = int(meta.get("cacheReadInputTokens") or 0)
        text, calls = [], []
        for block in ((obj.get("output") or {}).get("message") or {}).get("content") or []:
            if "text" in block:
                text.append(block["text"])
            elif "toolUse" in block:
                tu = block["toolUse"]
                calls.append(
                    {
                        "id": tu.get("toolUseId"),
                        "type": "function",
                        "function": {"name": tu.get("name"), "arguments": orjson.dumps(tu.get("input") or {}).decode()},
                    }
                )
        message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
        if calls:
            message["tool_calls"] = calls
        choices = [
            {
                "index": 0,
                "message": message,
                "finish_reason": STOP.get(obj.get("stopReason", ""), "stop"),
                "logprobs": None,
            }
        ]
        model = str(call.body.get("model", dep.model_name))
        out = chat_completion(model, choices, openai_usage(usage.prompt_tokens, usage.completion_tokens))
        return Reply(body=orjson.dumps(out), usage=usage, obj=out)

    async def stream_chunks(self, dep: Deployment, call: Call, response: aiohttp.ClientResponse, usage: Usage):
        from botocore.eventstream import EventStreamBuffer, ParserError  # heavy: see prepare()

        base = {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": str(call.body.get("model", dep.model_name)),
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> Chunk:
            return Chunk({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        buffer = EventStreamBuffer()
        tool_index: dict[int, int] = {}
        async for data in response.content.iter_any():
            buffer.add_data(data)
            try:
                messages = list(buffer)  # (framing is checked as the buffer is read: checksums, lengths)
            except ParserError:
                raise malformed(self.name) from None
            for message in messages:
                kind = message.headers.get(":event-type") or message.headers.get(":exception-type")
                obj = json_or_502(message.payload, self.name) if message.payload else {}
                if message.headers.get(":message-type") == "exception":
                    raise UpstreamError(
                        502, str(obj.get("message", kind)), llm_provider=self.name, kind="upstream_error"
                    )
                if kind == "messageStart":
                    yield chunk({"role": "assistant", "content": ""})
                elif kind == "contentBlockStart":
                    tool = (obj.get("start") or {}).get("toolUse")
                    if tool:
                        index = tool_index.setdefault(obj.get("contentBlockIndex", 0), len(tool_index))
                        yield chunk(
                            {
                                "tool_calls": [
                                    {
                                        "index": index,
                                        "id": tool.get("toolUseId"),
                                        "type": "function",
                                        "function": {"name": tool.get("name"), "arguments": ""},
                                    }
                                ]
                            }
                        )
                elif kind == "contentBlockDelta":
                    delta = obj.get("delta") or {}
                    if "text" in delta:
                        yield chunk({"content": delta["text"]})
                    elif "toolUse" in delta:
                        index = tool_index.get(obj.get("contentBlockIndex", 0), 0)
                        yield chunk(
                            {
                                "tool_calls": [
                                    {"index": index, "function": {"arguments": delta["toolUse"].get("input", "")}}
                                ]
                            }
                        )
                elif kind == "messageStop":
                    yield chunk({}, STOP.get(obj.get("stopReason", ""), "stop"))
                elif kind == "metadata":
                    meta = obj.get("usage") or {}
                    usage.prompt_tokens = int(meta.get("inputTokens") or 0)
                    usage.completion_tokens = int(meta.get("outputTokens") or 0)
                    usage.reported = True
        if call.include_usage:
            yield Chunk({**base, "choices": [], "usage": openai_usage(usage.prompt_tokens, usage.completion_tokens)})
