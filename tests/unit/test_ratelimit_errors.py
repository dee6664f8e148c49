"""The one 429: tagging never fails, the rendering is what the openai SDK expects."""

from __future__ import annotations

import math

import openai
import orjson
import pytest
from aiohttp import web

from apps.proxy.context import FALLBACK_PROVIDER
from apps.ratelimit.chain import ProxyMiddleware, build_chain
from apps.ratelimit.errors import ProxyRateLimitError
from apps.ratelimit.middleware import MetricsMiddleware
from apps.ratelimit.state import limiter_state
from tests.unit.ratelimit_helpers import key_context, ok, request


class UntaggedLimiter(ProxyMiddleware):
    """Raises without knowing provider or model, like a limiter deep in a chain might."""

    async def pre_call(self, ctx):
        raise ProxyRateLimitError("no", limit_type="requests", scope="key", retry_after=2.5)


PATH = "tests.unit.test_ratelimit_errors.UntaggedLimiter"


async def test_an_unresolvable_model_is_tagged_gateway_and_nothing_else_is_raised():
    chain = build_chain(["apps.ratelimit.middleware.MetricsMiddleware", PATH])
    ctx = request(key_context(), model="", llm_provider=FALLBACK_PROVIDER)
    with pytest.raises(ProxyRateLimitError) as info:
        await chain.pre_call(ctx)
    await chain.post_call(ctx, ok(429, error_type="ProxyRateLimitError"))
    error = info.value
    assert error.llm_provider == "gateway" and error.model == ""
    assert error.exception_class == "Gateway.ProxyRateLimitError"
    assert error.to_body()["error"]["llm_provider"] == "gateway"
    assert limiter_state(ctx).refusal is error


async def test_the_chain_tags_a_refusal_with_the_requests_provider_and_model():
    chain = build_chain([PATH])
    ctx = request(key_context(), model="claude-sonnet", llm_provider="anthropic")
    with pytest.raises(ProxyRateLimitError) as info:
        await chain.pre_call(ctx)
    assert info.value.llm_provider == "anthropic" and info.value.model == "claude-sonnet"
    assert info.value.exception_class == "Anthropic.ProxyRateLimitError"


@pytest.mark.parametrize("retry_after", [0, -5, None, math.nan, math.inf, "soon"])
def test_construction_and_tagging_never_raise(retry_after):
    error = ProxyRateLimitError(
        "x", limit_type="nonsense", scope="key", retry_after=retry_after, llm_provider=None, model=None,
        limit=math.inf, remaining=math.nan, reset_seconds=math.inf,
    )  # fmt: skip
    error.tag(llm_provider=None, model=None)
    error.tag(llm_provider=42, model=object())  # type: ignore[arg-type]
    assert error.retry_after == 1 and error.headers()["retry-after"] == "1"
    assert error.limit_type == "requests" and error.llm_provider == "gateway"
    assert error.exception_class == "Gateway.ProxyRateLimitError"
    orjson.dumps(error.to_body())


def test_provider_names_become_the_exception_class_prefix():
    for provider, expected in [("openai", "Openai"), ("openai_compatible", "OpenaiCompatible"), ("azure", "Azure")]:
        error = ProxyRateLimitError("x", limit_type="tokens", scope="team", retry_after=3, llm_provider=provider)
        assert error.exception_class == f"{expected}.ProxyRateLimitError"


def test_retry_after_is_the_real_time_rounded_up():
    error = ProxyRateLimitError("x", limit_type="tokens", scope="team", retry_after=12.2, limit=100, remaining=3)
    headers = error.headers()
    assert headers["retry-after"] == "13" and headers["retry-after-ms"] == "12200"
    assert headers["x-ratelimit-limit-tokens"] == "100" and headers["x-ratelimit-remaining-tokens"] == "3"
    assert headers["x-ratelimit-reset-tokens"] == "12.200s"


async def test_the_openai_sdk_raises_rate_limit_error_and_honours_retry_after(unused_tcp_port_factory=None):
    """A real HTTP round trip: the SDK reads our body and headers, waits retry-after, retries."""
    error = ProxyRateLimitError(
        "Rate limit exceeded for key 'k'.", limit_type="requests", scope="key", retry_after=0.2,
        llm_provider="openai", model="gpt-4o-mini", limit=1, remaining=0,
    )  # fmt: skip
    hits = []

    async def handler(request_):
        hits.append(1)
        return web.Response(
            status=429, body=orjson.dumps(error.to_body()), headers=error.headers(), content_type="application/json"
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert len(hits) == 2  # retried once, after the retry-after we sent
        assert info.value.status_code == 429
        assert info.value.response.headers["retry-after"] == "1"
        assert info.value.body["llm_provider"] == "openai" and info.value.body["model"] == "gpt-4o-mini"
        assert info.value.code == "rate_limit_exceeded"
        await client.close()
    finally:
        await runner.cleanup()


def test_metrics_middleware_is_first_in_the_default_chain(settings):
    assert settings.PROXY_MIDDLEWARE[0] == "apps.ratelimit.middleware.MetricsMiddleware"
    assert isinstance(build_chain().middleware[0], MetricsMiddleware)
