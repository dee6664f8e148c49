"""What a /v1 span says: the GenAI semantic-convention and gateway attributes, from the request's context.

Plain functions of the request (no OpenTelemetry import), used by ``apps.proxy.tracing`` when it builds
a span. Prompt and completion text only ever come from ``content_attributes``, which the span builder
calls for a team that opted in (``KeyContext.trace_content``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from apps.proxy.context import CallResult, RequestContext

# gen_ai.operation.name for each route; routes without a GenAI name keep the gateway's op name.
OPERATIONS = {
    "chat": "chat",
    "messages": "chat",
    "responses": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}
# gen_ai.provider.name (the conventions' well-known values) for each adapter.
PROVIDERS = {
    "openai": "openai",
    "openai_compatible": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "bedrock": "aws.bedrock",
    "gemini": "gcp.gemini",
}
REQUEST_PARAMETERS = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("max_output_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
)
INPUT_FIELDS = ("messages", "prompt", "input")
MAX_CONTENT_CHARS = 65_536  # prompt or completion text kept per span (opted-in teams only)


def request_attributes(attributes: dict[str, Any], ctx: RequestContext, op: str) -> str:
    """The tenant, model and request parameters of an authenticated request; returns the span's name."""
    key = ctx.key
    attributes["http.route"] = ctx.route
    attributes["gateway.request.id"] = ctx.request_id
    if key.key_alias:
        attributes["gateway.key.alias"] = key.key_alias
    if key.key_id is not None:
        attributes["gateway.key.id"] = key.key_id
    if key.team_id is not None:
        attributes["gateway.team.id"] = key.team_id
        attributes["gateway.team.name"] = key.team_name
    if key.organization_id is not None:
        attributes["gateway.organization.id"] = key.organization_id
        attributes["gateway.organization.name"] = key.organization_name
    if key.user_id is not None:
        attributes["gateway.user.id"] = key.user_id
    if ctx.llm_provider != "gateway":
        attributes["gen_ai.provider.name"] = PROVIDERS.get(ctx.llm_provider, ctx.llm_provider)
    if ctx.deployment_id is not None:
        attributes["gateway.deployment.id"] = ctx.deployment_id
    if not ctx.model:
        return f"{attributes['http.request.method']} {ctx.route}"
    attributes["gen_ai.request.model"] = ctx.model
    body = ctx.body
    if body:
        for field, name in REQUEST_PARAMETERS:
            value = body.get(field)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[name] = value
        if ctx.stream:
            attributes["gateway.stream"] = True
    return f"{attributes['gen_ai.operation.name']} {ctx.model}"


def result_attributes(attributes: dict[str, Any], result: CallResult) -> None:
    if result.prompt_tokens or result.completion_tokens:
        attributes["gen_ai.usage.input_tokens"] = result.prompt_tokens
        attributes["gen_ai.usage.output_tokens"] = result.completion_tokens
    if result.cost:
        attributes["gateway.cost"] = float(result.cost)
    if result.ttft_ms is not None:
        attributes["gateway.ttft_ms"] = round(result.ttft_ms, 3)


def content_attributes(attributes: dict[str, Any], body: dict[str, Any], output: str | None) -> None:
    """The prompt (as the client sent it) and the completion text, for teams that opted in, cut to a bound."""
    for field in INPUT_FIELDS:
        value = body.get(field)
        if value is not None:
            text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
            attributes["gen_ai.input.messages"] = text[:MAX_CONTENT_CHARS]
            break
    if output:
        attributes["gen_ai.output.messages"] = output[:MAX_CONTENT_CHARS]
