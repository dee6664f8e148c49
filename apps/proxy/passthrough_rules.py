"""What the provider pass-through routes (``/openai/*``, ``/anthropic/*``, ``/gemini/*``) may relay, and how
each provider's native answers report usage.

A pass-through request reaches the provider's own API unchanged except for what the gateway must own:
the upstream address (the deployment's base URL only; the client only picks a path under it, checked
here), the credentials (the deployment's; the client's stripped), the model (the deployment's upstream
id in place of the public name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from apps.proxy.context import RequestContext
from apps.proxy.errors import GatewayError, bad_request
from apps.proxy.pricing import price_for, token_cost
from apps.proxy.providers.anthropic_format import cache_write_tokens, messages_usage
from apps.proxy.providers.base import Usage
from apps.proxy.providers.openai import PRESETS
from apps.proxy.registry import Deployment
from apps.proxy.tokens import estimate_prompt_tokens, explicit_max_tokens

# One path segment as provider APIs write them: ids, model names, "models/gemini-2.0-flash:generateContent".
# No percent-encoding at all (an encoded slash or dot would change the path once the upstream decodes it).
_SEGMENT = re.compile(r"[A-Za-z0-9_~:+\-.]+")
_VERSION_SUFFIX = re.compile(r"/v1(?:beta|alpha)?\d*$")
# Request headers a client may send on (everything else, credentials and forwarding headers above all, is dropped).
FORWARDED_HEADERS = (b"content-type", b"accept", b"anthropic-version", b"anthropic-beta", b"openai-beta")
# Query parameters that carry a client's credential (Gemini's ?key=): never relayed.
CREDENTIAL_PARAMS = frozenset({"key", "api_key", "api-key"})


@dataclass(frozen=True, slots=True)
class Native:
    """One provider's native API behind ``/<name>/``."""

    name: str  # the route prefix and the deployments' provider
    default_base: str
    versions: frozenset[str]  # the first path segment a client may ask for
    model_in_path: bool = False  # Gemini: /v1beta/models/{model}:{action}

    @property
    def route(self) -> str:
        """The route label of its ledger rows and metrics (never the client's path: unbounded)."""
        return f"/{self.name}/*"

    def base(self, dep: Deployment) -> str:
        """The deployment's base URL without its version segment (the client's path starts with one)."""
        base = dep.api_base or self.default_base
        if self.name == "openai" and not dep.api_base:
            base = PRESETS.get(str(dep.extra.get("preset", "openai")), PRESETS["openai"])
        return _VERSION_SUFFIX.sub("", base.rstrip("/"))

    def auth_headers(self, dep: Deployment, client: dict[bytes, bytes]) -> dict[str, str]:
        if self.name == "anthropic":
            version = client.get(b"anthropic-version", b"").decode("latin-1")
            return {"x-api-key": dep.api_key, "anthropic-version": version or "2023-06-01"}
        if self.name == "gemini":
            return {"x-goog-api-key": dep.api_key}
        return {"authorization": f"Bearer {dep.api_key}"} if dep.api_key else {}


NATIVES = {
    "openai": Native("openai", PRESETS["openai"], frozenset({"v1"})),
    "anthropic": Native("anthropic", "https://api.anthropic.com", frozenset({"v1"})),
    "gemini": Native(
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta",
        frozenset({"v1", "v1beta", "v1alpha"}),
        model_in_path=True,
    ),
}


def path_segments(native: Native, raw_path: bytes) -> list[str]:
    """The client's path under ``/<provider>`` as checked segments; 400 for anything that could leave the base."""
    prefix = f"/{native.name}/".encode()
    rest = raw_path[len(prefix) :]
    if b"%" in rest or b"\\" in rest:
        raise bad_request("Pass-through paths may not contain encoded characters or backslashes.", code="invalid_path")
    parts = rest.decode("latin-1").split("/")
    if parts and parts[-1] == "":
        parts.pop()  # one trailing slash
    for part in parts:
        if not _SEGMENT.fullmatch(part) or part in (".", ".."):
            raise bad_request("The pass-through path is not a plain API path.", code="invalid_path")
    if not parts or parts[0] not in native.versions:
        versions = ", ".join(sorted(native.versions))
        raise GatewayError(
            404, f"Unknown {native.name} path: it must start with /{native.name}/{{{versions}}}/.", code="unknown_url",
            kind="not_found",
        )  # fmt: skip
    return parts


def path_model(native: Native, parts: list[str]) -> str | None:
    """The model a Gemini path names (``models/{model}:{action}``), else None."""
    if native.model_in_path and len(parts) >= 3 and parts[1] == "models":
        return parts[2].split(":", 1)[0] or None
    return None


def upstream_path(native: Native, parts: list[str], dep_model: str | None) -> str:
    if dep_model is not None and native.model_in_path and len(parts) >= 3 and parts[1] == "models":
        action = parts[2].partition(":")[2]
        parts = [*parts[:2], dep_model + (f":{action}" if action else ""), *parts[3:]]
    return "/" + "/".join(parts)


def upstream_query(query_string: bytes) -> str:
    """The client's query without credentials (``?key=``), re-encoded."""
    if not query_string:
        return ""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    kept = [(k, v) for k, v in pairs if k.lower() not in CREDENTIAL_PARAMS]
    return "?" + urlencode(kept) if kept else ""


def query_key(query_string: bytes) -> str | None:
    """Gemini clients may authenticate with ``?key=``."""
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name == "key" and value:
            return value
    return None


def estimate_call(ctx: RequestContext, dep: Deployment, body: dict[str, Any] | None, method: str) -> None:
    """What the limiters reserve: the prompt estimate and the output cap the body sets (else the model's)."""
    if body is None or method != "POST":
        return
    price = price_for(dep)
    ctx.estimated_prompt_tokens = estimate_prompt_tokens(body)
    config = body.get("generationConfig") if isinstance(body.get("generationConfig"), dict) else {}
    cap = explicit_max_tokens(body) or config.get("maxOutputTokens")
    ctx.max_output_tokens = cap if isinstance(cap, int) and cap > 0 else price.max_output_tokens
    ctx.estimated_cost = token_cost(
        price, prompt_tokens=ctx.estimated_prompt_tokens, completion_tokens=ctx.max_output_tokens
    )


# --- usage as each provider reports it ---------------------------------------------------------------
def take_usage(provider: str, obj: Any, usage: Usage) -> None:
    """Read one native JSON answer or stream event into ``usage`` (later reports win)."""
    if isinstance(obj, list):  # Gemini's streamGenerateContent without alt=sse: a JSON array of chunks
        for item in obj:
            take_usage(provider, item, usage)
        return
    if not isinstance(obj, dict):
        return
    if provider == "gemini":
        meta = obj.get("usageMetadata")
        if isinstance(meta, dict):
            usage.prompt_tokens = int(meta.get("promptTokenCount") or 0)
            usage.completion_tokens = int(meta.get("candidatesTokenCount") or 0) + int(
                meta.get("thoughtsTokenCount") or 0
            )
            usage.cached_tokens = int(meta.get("cachedContentTokenCount") or 0)
            usage.reported = True
    elif provider == "anthropic":
        kind = obj.get("type")
        if kind == "message_start":
            obj = obj.get("message") or {}
        if kind == "message_delta":
            output = (obj.get("usage") or {}).get("output_tokens")
            if output is not None:
                usage.completion_tokens, usage.reported = int(output), True
        elif isinstance(obj.get("usage"), dict):
            usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens = messages_usage(obj["usage"])
            usage.cache_write_tokens = cache_write_tokens(obj["usage"])
            usage.reported = True
    else:
        if obj.get("type") == "response.completed" and isinstance(obj.get("response"), dict):
            obj = obj["response"]
        if isinstance(obj.get("usage"), dict):
            usage.take(obj["usage"])
