"""Prices in USD: a shipped table for common models, overridden per deployment (admin fields / ``extra``).

Per token for text (input, output, cached input), per image for image generation, per second for
audio transcription, per character for speech. Lookups try the deployment's upstream model id, then
its public name, each also without a provider prefix (``openai/``) and without a date suffix
(``-2024-08-06``). Unknown models cost 0 unless the deployment sets prices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from apps.proxy.registry import Deployment

D = Decimal
PER_MILLION = D("0.000001")
ZERO = D(0)
# Anthropic bills prompt-cache writes (cache_creation_input_tokens) at 1.25x the input price (5-minute cache).
ANTHROPIC_CACHE_WRITE_FACTOR = D("1.25")


@dataclass(frozen=True, slots=True)
class Price:
    input: Decimal = ZERO
    output: Decimal = ZERO
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None  # prompt-cache writes; None: the input price
    per_image: Decimal = ZERO
    per_audio_second: Decimal = ZERO
    per_character: Decimal = ZERO
    max_output_tokens: int = 4096
    # Realtime audio tokens (None: billed as text tokens); cached audio input is billed at ``cached_input``.
    audio_input: Decimal | None = None
    audio_output: Decimal | None = None


def _m(inp: str, out: str, cached: str | None = None, max_out: int = 4096) -> Price:
    return Price(
        input=D(inp) * PER_MILLION,
        output=D(out) * PER_MILLION,
        cached_input=D(cached) * PER_MILLION if cached is not None else None,
        max_output_tokens=max_out,
    )


def _realtime(text_in: str, text_out: str, cached: str, audio_in: str, audio_out: str) -> Price:
    """A realtime model: text and audio tokens at their own rates (USD per million)."""
    return Price(
        input=D(text_in) * PER_MILLION,
        output=D(text_out) * PER_MILLION,
        cached_input=D(cached) * PER_MILLION,
        audio_input=D(audio_in) * PER_MILLION,
        audio_output=D(audio_out) * PER_MILLION,
    )


# USD per million tokens (input, output, cached input). Checked against public price pages, 2025.
PRICES: dict[str, Price] = {
    "gpt-4o": _m("2.50", "10.00", "1.25", 16384),
    "gpt-4o-mini": _m("0.15", "0.60", "0.075", 16384),
    "gpt-4.1": _m("2.00", "8.00", "0.50", 32768),
    "gpt-4.1-mini": _m("0.40", "1.60", "0.10", 32768),
    "gpt-4.1-nano": _m("0.10", "0.40", "0.025", 32768),
    "gpt-4-turbo": _m("10.00", "30.00", None, 4096),
    "gpt-3.5-turbo": _m("0.50", "1.50", None, 4096),
    "gpt-3.5-turbo-instruct": _m("1.50", "2.00", None, 4096),
    "o1": _m("15.00", "60.00", "7.50", 100000),
    "o1-mini": _m("1.10", "4.40", "0.55", 65536),
    "o3": _m("2.00", "8.00", "0.50", 100000),
    "o3-mini": _m("1.10", "4.40", "0.55", 100000),
    "o4-mini": _m("1.10", "4.40", "0.275", 100000),
    "text-embedding-3-small": _m("0.02", "0"),
    "text-embedding-3-large": _m("0.13", "0"),
    "text-embedding-ada-002": _m("0.10", "0"),
    "omni-moderation-latest": _m("0", "0"),
    "text-moderation-latest": _m("0", "0"),
    "claude-3-5-haiku": _m("0.80", "4.00", "0.08", 8192),
    "claude-3-5-sonnet": _m("3.00", "15.00", "0.30", 8192),
    "claude-3-7-sonnet": _m("3.00", "15.00", "0.30", 64000),
    "claude-sonnet-4": _m("3.00", "15.00", "0.30", 64000),
    "claude-opus-4": _m("15.00", "75.00", "1.50", 32000),
    "claude-3-haiku": _m("0.25", "1.25", "0.03", 4096),
    "claude-3-opus": _m("15.00", "75.00", "1.50", 4096),
    "gemini-2.0-flash": _m("0.10", "0.40", "0.025", 8192),
    "gemini-2.5-flash": _m("0.30", "2.50", "0.075", 65536),
    "gemini-2.5-pro": _m("1.25", "10.00", "0.31", 65536),
    "gemini-1.5-pro": _m("1.25", "5.00", None, 8192),
    "gemini-1.5-flash": _m("0.075", "0.30", None, 8192),
    "text-embedding-004": _m("0", "0"),
    "anthropic.claude-3-5-haiku-20241022-v1:0": _m("0.80", "4.00", None, 8192),
    "anthropic.claude-3-5-sonnet-20241022-v2:0": _m("3.00", "15.00", None, 8192),
    "amazon.nova-lite-v1:0": _m("0.06", "0.24", None, 5000),
    "amazon.nova-pro-v1:0": _m("0.80", "3.20", None, 5000),
    "meta.llama3-1-70b-instruct-v1:0": _m("0.72", "0.72", None, 2048),
    "dall-e-3": Price(per_image=D("0.040")),
    "dall-e-2": Price(per_image=D("0.020")),
    "gpt-image-1": Price(input=D("5") * PER_MILLION, output=D("40") * PER_MILLION, per_image=D("0.042")),
    "whisper-1": Price(per_audio_second=D("0.0001")),
    "tts-1": Price(per_character=D("0.000015")),
    "tts-1-hd": Price(per_character=D("0.000030")),
    "rerank-english-v3.0": Price(per_image=D("0")),
    "gpt-realtime": _realtime("4.00", "16.00", "0.40", "32.00", "64.00"),
    "gpt-4o-realtime-preview": _realtime("5.00", "20.00", "2.50", "40.00", "80.00"),
    "gpt-4o-mini-realtime-preview": _realtime("0.60", "2.40", "0.30", "10.00", "20.00"),
}

_DATE_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-latest)$")
ZERO_PRICE = Price()


def _lookup(name: str) -> Price | None:
    if not name:
        return None
    candidates = [name]
    if "/" in name:
        candidates.append(name.rsplit("/", 1)[1])
    candidates += [_DATE_SUFFIX.sub("", c) for c in list(candidates)]
    for candidate in candidates:
        price = PRICES.get(candidate)
        if price is not None:
            return price
    return None


_cache: dict[int, tuple[Deployment, Price]] = {}


def _is_anthropic_model(deployment: Deployment) -> bool:
    return deployment.provider == "anthropic" or "claude" in deployment.model.lower()


def _cache_write_price(deployment: Deployment, base: Price, input_price: Decimal) -> Decimal | None:
    if deployment.cache_creation_input_token_cost is not None:
        return deployment.cache_creation_input_token_cost
    if base.cache_write is not None:
        return base.cache_write
    return input_price * ANTHROPIC_CACHE_WRITE_FACTOR if _is_anthropic_model(deployment) else None


def _extra_price(extra: dict, name: str, default: Decimal | None) -> Decimal | None:
    return D(str(extra[name])) if name in extra else default


def price_for(deployment: Deployment) -> Price:
    """The table's price for this deployment with the deployment's own fields taking precedence."""
    cached = _cache.get(deployment.id)
    if cached is not None and cached[0] is deployment:
        return cached[1]
    base = _lookup(deployment.model) or _lookup(deployment.model_name) or ZERO_PRICE
    extra = deployment.extra or {}
    input_price = deployment.input_cost_per_token if deployment.input_cost_per_token is not None else base.input
    price = Price(
        input=input_price,
        output=deployment.output_cost_per_token if deployment.output_cost_per_token is not None else base.output,
        cached_input=(
            deployment.cached_input_cost_per_token
            if deployment.cached_input_cost_per_token is not None
            else base.cached_input
        ),
        cache_write=_cache_write_price(deployment, base, input_price),
        per_image=D(str(extra["cost_per_image"])) if "cost_per_image" in extra else base.per_image,
        per_audio_second=(
            D(str(extra["cost_per_audio_second"])) if "cost_per_audio_second" in extra else base.per_audio_second
        ),
        per_character=D(str(extra["cost_per_character"])) if "cost_per_character" in extra else base.per_character,
        max_output_tokens=int(extra.get("max_output_tokens", base.max_output_tokens)),
        audio_input=D(str(extra["audio_input_cost_per_token"]))
        if "audio_input_cost_per_token" in extra
        else base.audio_input,
        audio_output=(
            D(str(extra["audio_output_cost_per_token"]))
            if "audio_output_cost_per_token" in extra
            else base.audio_output
        ),
    )
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[deployment.id] = (deployment, price)
    return price


def token_cost(
    price: Price, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0
) -> Decimal:
    """``prompt_tokens`` includes cache reads and writes (as clients are told); each part at its own rate."""
    if cached_tokens <= 0 and cache_write_tokens <= 0:  # the common case: two products, nothing else
        return prompt_tokens * price.input + completion_tokens * price.output
    cached = min(max(cached_tokens, 0), prompt_tokens)
    written = min(max(cache_write_tokens, 0), prompt_tokens - cached)
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    write_rate = price.cache_write if price.cache_write is not None else price.input
    plain = prompt_tokens - cached - written
    return plain * price.input + cached * cached_rate + written * write_rate + completion_tokens * price.output


def call_cost(
    price: Price,
    *,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    images: int = 0,
    audio_seconds: float = 0.0,
    characters: int = 0,
) -> Decimal:
    cost = token_cost(
        price,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_tokens=cached_tokens,
        cache_write_tokens=cache_write_tokens,
    )
    if images:
        cost += images * price.per_image
    if audio_seconds:
        cost += D(str(round(audio_seconds, 3))) * price.per_audio_second
    if characters:
        cost += characters * price.per_character
    return cost


def realtime_cost(
    price: Price,
    *,
    text_in: int,
    audio_in: int,
    cached_text_in: int,
    cached_audio_in: int,
    text_out: int,
    audio_out: int,
) -> Decimal:
    """One realtime response (``response.done`` usage): cached input at the cached rate, audio at the audio
    rates (the text rates when the model has none). ``text_in``/``audio_in`` include their cached parts."""
    cached_text = min(max(cached_text_in, 0), text_in)
    cached_audio = min(max(cached_audio_in, 0), audio_in)
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    audio_in_rate = price.audio_input if price.audio_input is not None else price.input
    audio_out_rate = price.audio_output if price.audio_output is not None else price.output
    return (
        (text_in - cached_text) * price.input
        + (audio_in - cached_audio) * audio_in_rate
        + (cached_text + cached_audio) * cached_rate
        + text_out * price.output
        + audio_out * audio_out_rate
    )


def format_cost(cost: Decimal) -> str:
    """Header form: fixed-point, no exponent, trailing zeros trimmed."""
    text = f"{cost:.12f}".rstrip("0").rstrip(".")
    return text or "0"
