"""What makes two requests "the same" for the response cache, and what the client asked of the cache.

The key is a SHA-256 over the organization, the route, the model group the name resolved to in that
organization, and the request body in canonical JSON (keys sorted at every depth, no whitespace). Two
requests share an entry only when all four match, so tenants never share one: the organization id is
part of the hashed material, not a prefix anybody could choose.

Normalized away (they never change the answer): ``model`` (replaced by the resolved group, so an alias
and its target share entries), ``stream`` and ``stream_options`` (a streamed and a whole answer share
an entry: either is replayed in the other's shape), ``user`` and ``metadata`` (bookkeeping for the
ledger and upstream logs), and ``cache`` (the LiteLLM-style per-request cache controls). Everything else
is kept as sent, so temperature, seed, n, tools, tool_choice, response_format, max_tokens, logprobs and
any provider-specific extra field all split entries.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

CACHEABLE_OPS = frozenset({"chat", "completions", "embeddings"})
IGNORED_FIELDS = frozenset({"model", "stream", "stream_options", "user", "metadata", "cache"})
KEY_PREFIX = "gw:cache:v1:"


def cache_key(*, organization_id: int | None, op: str, model_group: str, body: dict[str, Any]) -> str:
    """The entry's name: ``gw:cache:v1:<sha256 hex>`` (fixed length whatever the body's size)."""
    kept = {name: value for name, value in body.items() if name not in IGNORED_FIELDS}
    canonical = orjson.dumps(kept, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    digest = hashlib.sha256()
    # Length-prefixed parts: no choice of model name or body can make two different tuples hash alike.
    for part in (str(organization_id or "-").encode(), op.encode(), model_group.encode()):
        digest.update(len(part).to_bytes(4, "big") + part)
    digest.update(canonical)
    return KEY_PREFIX + digest.hexdigest()


def directives(headers: dict[bytes, bytes], body: dict[str, Any]) -> tuple[bool, bool]:
    """(read, write) for this request: ``cache-control: no-cache`` skips the lookup but stores the fresh
    answer; ``no-store`` does neither. The body form LiteLLM clients send (``"cache": {"no-cache": true}``,
    also inside ``extra_body``, which the SDKs merge into the body) means the same."""
    read = write = True
    raw = headers.get(b"cache-control")
    if raw:
        tokens = {part.strip().lower() for part in raw.decode("latin-1").split(",")}
        if "no-store" in tokens:
            read = write = False
        elif "no-cache" in tokens:
            read = False
    options = body.get("cache")
    if isinstance(options, dict):
        if options.get("no-store") is True:
            read = write = False
        if options.get("no-cache") is True:
            read = False
    return read, write
