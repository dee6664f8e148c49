"""The OpenAPI description of the /v1 surface, from django-ninja schemas; served at ``GET /v1/openapi.json``.

The proxy itself never runs these views (the bare ASGI app answers /v1); the operations exist so the
surface has one machine-readable description. Bodies allow unknown fields, as the proxy relays them.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Literal

import orjson
from ninja import NinjaAPI, Schema
from ninja.security import HttpBearer
from pydantic import ConfigDict, Field


class _Open(Schema):
    model_config = ConfigDict(extra="allow")


class Message(_Open):
    role: str
    content: Any = None


class StreamOptions(_Open):
    include_usage: bool = False


class ChatRequest(_Open):
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    tools: list[dict[str, Any]] | None = None
    user: str | None = Field(None, description="The end user (customer) for customer limits and spend.")
    metadata: dict[str, Any] | None = Field(None, description="metadata.session_id names an agent session.")


class CompletionRequest(_Open):
    model: str
    prompt: str | list[Any]


class EmbeddingRequest(_Open):
    model: str
    input: str | list[Any]


class ResponsesRequest(_Open):
    model: str
    input: str | list[Any]


class ImageRequest(_Open):
    model: str
    prompt: str
    n: int = 1


class SpeechRequest(_Open):
    model: str
    input: str
    voice: str


class ModerationRequest(_Open):
    model: str = "omni-moderation-latest"
    input: str | list[Any]


class RerankRequest(_Open):
    model: str
    query: str
    documents: list[Any]


class MessagesRequest(_Open):
    model: str
    max_tokens: int
    messages: list[Message] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    stream: bool = False


class CountTokensRequest(_Open):
    model: str
    messages: list[Message] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None


class BatchRequest(_Open):
    input_file_id: str
    endpoint: str
    completion_window: Literal["24h"] = "24h"


class Error(Schema):
    error: dict[str, Any] = Field(description="message, type, param, code (+ llm_provider, limit_type, scope on 429s)")


class _Key(HttpBearer):
    def authenticate(self, request, token):  # pragma: no cover - documentation only
        return None


surface = NinjaAPI(
    title="LLM Gateway: OpenAI-compatible /v1",
    version="1.0.0",
    description="Virtual keys as Bearer (or x-api-key / api-key). Every response carries x-request-id, "
    "x-gateway-cost, x-gateway-overhead-ms and x-gateway-deployment. See docs/proxy.md.",
    urls_namespace="v1-surface",
    auth=_Key(),
    docs_url=None,
    openapi_url=None,
)
ERRORS = {400: Error, 401: Error, 403: Error, 404: Error, 413: Error, 429: Error, 502: Error, 503: Error, 504: Error}
ANY = {200: dict[str, Any], **ERRORS}


def _doc(method: str, path: str, body: type[Schema] | None, summary: str) -> None:
    def view(request, **kwargs) -> Any:  # pragma: no cover - documentation only
        raise NotImplementedError

    view.__annotations__ = {"return": Any}
    params = [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if body is not None:
        params.append(inspect.Parameter("payload", inspect.Parameter.KEYWORD_ONLY, annotation=body))
    for name in re.findall(r"{(\w+)}", path):
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str))
    view.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    view.__name__ = re.sub(r"\W+", "_", f"{method}_{path}").strip("_")
    getattr(surface, method)(path, response=ANY, summary=summary)(view)


for _method, _path, _body, _summary in (
    ("post", "/chat/completions", ChatRequest, "Chat completion (SSE when stream=true)"),
    ("post", "/completions", CompletionRequest, "Text completion"),
    ("post", "/embeddings", EmbeddingRequest, "Embeddings"),
    ("post", "/responses", ResponsesRequest, "Responses API"),
    ("post", "/images/generations", ImageRequest, "Image generation"),
    ("post", "/audio/speech", SpeechRequest, "Text to speech (binary audio)"),
    ("post", "/moderations", ModerationRequest, "Moderation"),
    ("post", "/rerank", RerankRequest, "Rerank documents"),
    ("post", "/messages", MessagesRequest, "Anthropic Messages (SSE when stream=true)"),
    ("post", "/messages/count_tokens", CountTokensRequest, "Anthropic token count (not charged)"),
    ("post", "/batches", BatchRequest, "Submit a batch (charged as its requests and tokens)"),
    ("get", "/models", None, "Models this key may use"),
    ("get", "/models/{model_id}", None, "One model"),
    ("get", "/batches/{batch_id}", None, "Batch status"),
    ("get", "/files/{file_id}", None, "File metadata"),
    ("get", "/files/{file_id}/content", None, "File content"),
    ("get", "/files", None, "Files this organization uploaded through the gateway"),
    ("delete", "/files/{file_id}", None, "Delete a file"),
    ("get", "/batches", None, "Batches this organization submitted through the gateway"),
):
    _doc(_method, _path, _body, _summary)


def openapi_json() -> bytes:
    """The document (multipart uploads, /v1/files and /v1/audio/transcriptions, are described in docs/proxy.md)."""
    return orjson.dumps(surface.get_openapi_schema(path_prefix="/v1"), option=orjson.OPT_NON_STR_KEYS)
