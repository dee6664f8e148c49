"""OpenAI, Azure OpenAI and every OpenAI-compatible server (hosted presets, vLLM, Ollama, LM Studio).

The request body is relayed as the client sent it (unknown fields included) with ``model`` replaced
by the deployment's upstream id; responses are relayed byte for byte after reading their usage.
Streams are relayed event by event; the gateway always asks for the usage chunk (so spend is exact)
and drops it again when the client did not ask for it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from apps.proxy.errors import UpstreamError, scrub_upstream_text
from apps.proxy.providers.base import (
    GET_OPS,
    OP_PATHS,
    Adapter,
    Call,
    Chunk,
    HttpRequest,
    Reply,
    Usage,
    json_or_502,
    private_strings,
    sse_events,
)
from apps.proxy.registry import Deployment

# Public base URLs for OpenAI-compatible servers; a deployment picks one with extra={"preset": "groq"}.
PRESETS: dict[str, str] = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together": "https://api.together.xyz/v1",
    "fireworks": "https://api.fireworks.ai/inference/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "mistral": "https://api.mistral.ai/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "perplexity": "https://api.perplexity.ai",
    "xai": "https://api.x.ai/v1",
    "deepinfra": "https://api.deepinfra.com/v1/openai",
    "cerebras": "https://api.cerebras.ai/v1",
    "vllm": "http://127.0.0.1:8000/v1",
    "ollama": "http://127.0.0.1:11434/v1",
    "lmstudio": "http://127.0.0.1:1234/v1",
}
# Operations whose successful answer may be something other than one JSON document.
NON_JSON_OPS = frozenset({"audio_speech", "audio_transcriptions", "files_content"})
# Servers known to accept stream_options.include_usage.
USAGE_IN_STREAM = frozenset({"openai", "azure", "vllm", "ollama", "lmstudio", "groq", "together", "deepseek", "xai"})


def op_path(call: Call) -> str:
    """The operation's path; ids (from the upstream, inside signed handles) are one path segment, escaped."""
    if not call.path_args:
        return OP_PATHS[call.op]
    return OP_PATHS[call.op].format(*(quote(arg, safe="") for arg in call.path_args))


def _image_events_usage(raw: bytes, usage: Usage) -> None:
    """Images and tokens of a streamed image generation (``image_generation.completed`` events)."""
    for _name, data in sse_events(bytearray(), raw + b"\n\n"):
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("type") in ("image_generation.completed", "image_edit.completed"):
            usage.images += 1
            usage.take(event.get("usage"))


_TIMESTAMP = re.compile(rb"(?:(\d+):)?(\d\d):(\d\d)[.,](\d{3})")
ESTIMATED_AUDIO_BYTES_PER_SECOND = 16_000  # 128 kbit/s, the common compressed upload


def _subtitle_seconds(raw: bytes) -> float:
    """The end of the last cue of an srt/vtt transcription (0.0 for plain text)."""
    arrow = raw.rfind(b"-->")
    line_end = raw.find(b"\n", arrow)
    after = raw[arrow + 3 : line_end if line_end != -1 else None].split() if arrow != -1 else []
    found = _TIMESTAMP.fullmatch(after[0]) if after else None
    if not found:
        return 0.0
    hours, minutes, seconds, millis = (int(g or 0) for g in found.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def _upload_seconds(call: Call) -> float:
    """An estimate from the uploaded audio's size, when the answer does not say how long it was."""
    size = sum(len(part[3]) for part in call.form or () if part[0] == "file")
    return size / ESTIMATED_AUDIO_BYTES_PER_SECOND


def _scrubbed_failure(event: dict[str, Any], dep: Deployment) -> dict[str, Any]:
    """A Responses API ``error`` / ``response.failed`` event with its message scrubbed (re-serialized)."""
    holder = event
    if event.get("type") == "response.failed":
        holder = (event.get("response") or {}).get("error") or {}
    if isinstance(holder, dict) and isinstance(holder.get("message"), str):
        holder["message"] = scrub_upstream_text(holder["message"][:1000], private_strings(dep))[:500]
    return event


def _with_model(body: dict[str, Any], model: str) -> dict[str, Any]:
    if "model" in body:
        return {**body, "model": model}
    return body


class OpenAIAdapter(Adapter):
    name = "openai"
    # "realtime": the /v1/realtime WebSocket relay (apps/proxy/realtime.py) connects to ``realtime_url``.
    ops = frozenset(OP_PATHS) | {"realtime"}

    def base_url(self, dep: Deployment) -> str:
        if dep.api_base:
            return dep.api_base
        return PRESETS.get(str(dep.extra.get("preset", "openai")), PRESETS["openai"])

    def url(self, dep: Deployment, call: Call) -> str:
        return self.base_url(dep) + op_path(call)

    def auth_headers(self, dep: Deployment) -> dict[str, str]:
        return {"authorization": f"Bearer {dep.api_key}"} if dep.api_key else {}

    def realtime_url(self, dep: Deployment) -> str:
        """The upstream's realtime WebSocket (an http(s) URL: aiohttp's ws_connect upgrades it)."""
        return f"{self.base_url(dep)}/realtime?model={quote(dep.model, safe='')}"

    def wants_stream_usage(self, dep: Deployment) -> bool:
        preset = str(dep.extra.get("preset", "openai" if self.name == "openai" else ""))
        return bool(dep.extra.get("stream_usage", preset in USAGE_IN_STREAM or not preset))

    def prepare(self, dep: Deployment, call: Call) -> HttpRequest:
        headers = self.auth_headers(dep)
        url = self.url(dep, call)
        if call.op in GET_OPS:
            return HttpRequest("GET", url, headers)
        if call.op == "files_delete":
            return HttpRequest("DELETE", url, headers)
        if call.form is not None:
            form = aiohttp.FormData()
            for name, filename, content_type, value in call.form:
                if name == "model":
                    value = dep.model.encode()
                if filename is None:
                    form.add_field(name, value.decode("utf-8", "replace"))
                else:
                    form.add_field(name, value, filename=filename, content_type=content_type)
            return HttpRequest("POST", url, headers, form)
        body = _with_model(call.body, dep.model)
        if call.stream and call.op in ("chat", "completions") and self.wants_stream_usage(dep):
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body = {**body, "stream_options": options}
        headers["content-type"] = "application/json"
        return HttpRequest("POST", url, headers, orjson.dumps(body))

    def parse(self, dep: Deployment, call: Call, raw: bytes, content_type: str) -> Reply:
        usage = Usage()
        if call.op == "files_content" or (
            "json" not in content_type and (call.op in NON_JSON_OPS or "event-stream" in content_type)
        ):
            # Speech audio, text/srt/vtt transcriptions, file content (JSONL for batches), the events of a route
            # the gateway does not stream itself (images with "stream": true): relay as is. Every other answer
            # must be JSON whatever its label: an HTML page is a 502, not a 200 for the client.
            if call.op == "audio_speech":
                usage.characters = len(str(call.body.get("input", "")))
            elif call.op == "images" and "event-stream" in content_type:
                _image_events_usage(raw, usage)  # else streamed images would cost nothing
            elif call.op == "audio_transcriptions":
                usage.audio_seconds = _subtitle_seconds(raw) or _upload_seconds(call)
            return Reply(body=raw, usage=usage, content_type=content_type.encode("latin-1"))
        obj = json_or_502(raw, self.name)
        if isinstance(obj, dict):
            usage.take(obj.get("usage"))
            if call.op == "images":
                usage.images = len(obj.get("data") or [])
            elif call.op == "audio_transcriptions":
                # verbose_json has "duration"; json has usage {"type": "duration", "seconds"} (whisper) or tokens.
                reported = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
                seconds = obj.get("duration", reported.get("seconds"))
                if seconds is not None:
                    usage.audio_seconds = float(seconds)
                elif not usage.reported:
                    usage.audio_seconds = _upload_seconds(call)  # an old-style {"text"}: not free
        return Reply(body=raw, usage=usage, obj=obj if isinstance(obj, dict) else None)

    async def stream_chunks(self, dep: Deployment, call: Call, response: aiohttp.ClientResponse, usage: Usage):
        async for _event, data in self.sse(response):
            if data == b"[DONE]":
                return
            obj = json_or_502(data, self.name)
            if not isinstance(obj, dict):
                continue
            if call.op == "responses":
                # Responses API events: usage arrives inside the final response.completed event.
                kind = obj.get("type")
                if kind == "response.completed":
                    usage.take((obj.get("response") or {}).get("usage"))
                elif kind in ("error", "response.failed"):
                    yield Chunk(_scrubbed_failure(obj, dep))  # the upstream's words, as for every upstream error
                    continue
                yield Chunk(obj, data)
                continue
            error = obj.get("error")
            if error and not obj.get("choices"):
                # A failure reported inside the stream: ends it with an error event in the client's format,
                # the upstream's text scrubbed like any other upstream error (Adapter._guarded).
                message = error.get("message") if isinstance(error, dict) else error
                raise UpstreamError(502, str(message or "upstream stream error"), llm_provider=self.name)
            if obj.get("usage"):
                usage.take(obj["usage"])
                if not obj.get("choices") and not call.include_usage:
                    continue  # we asked for it, the client did not
            elif "usage" in obj and not call.include_usage:
                # "usage": null appears only because we asked for it: relay what the client expects.
                del obj["usage"]
                yield Chunk(obj)
                continue
            yield Chunk(obj, data)


class OpenAICompatibleAdapter(OpenAIAdapter):
    name = "openai_compatible"
    ops = frozenset(OP_PATHS)  # no realtime: the servers behind this provider do not speak it


class AzureAdapter(OpenAIAdapter):
    """Azure OpenAI: deployment name in the path, ``api-version`` query, ``api-key`` header."""

    name = "azure"
    DEFAULT_API_VERSION = "2024-10-21"
    REALTIME_API_VERSION = "2025-04-01-preview"

    def url(self, dep: Deployment, call: Call) -> str:
        version = dep.api_version or self.DEFAULT_API_VERSION
        path = op_path(call)
        if call.op.startswith(("files", "batches")):
            return f"{dep.api_base}/openai{path}?api-version={version}"
        return f"{dep.api_base}/openai/deployments/{dep.model}{path}?api-version={version}"

    def auth_headers(self, dep: Deployment) -> dict[str, str]:
        return {"api-key": dep.api_key} if dep.api_key else {}

    def realtime_url(self, dep: Deployment) -> str:
        # Realtime needs a preview api-version the chat routes may not use: extra["realtime_api_version"].
        version = str(dep.extra.get("realtime_api_version") or dep.api_version or self.REALTIME_API_VERSION)
        return f"{dep.api_base}/openai/realtime?api-version={quote(version)}&deployment={quote(dep.model, safe='')}"

    def wants_stream_usage(self, dep: Deployment) -> bool:
        return bool(dep.extra.get("stream_usage", True))
