"""Hot-path helpers: pricing, token estimates, forbidden fields, signed handles, multipart, router picks, auth."""

from __future__ import annotations

import asyncio
import dataclasses
from decimal import Decimal

import pytest

from apps.proxy.auth import _effective_models, bearer_token
from apps.proxy.errors import GatewayError, UpstreamError
from apps.proxy.handles import Handle, unwrap, wrap
from apps.proxy.multipart import form_fields, parse_multipart
from apps.proxy.pricing import call_cost, format_cost, price_for
from apps.proxy.providers import build_adapters
from apps.proxy.registry import Deployment, Group
from apps.proxy.router import Router
from apps.proxy.tokens import estimate_prompt_tokens, reject_client_upstream, requested_max_tokens


def dep(id: int, **kw) -> Deployment:
    return Deployment(**{"id": id, "model_name": "m", "provider": "openai", "model": f"up{id}", **kw})


def test_price_table_strips_dates_and_prefixes_and_deployment_overrides():
    assert price_for(dep(1, model="gpt-4o-mini-2024-07-18")).input == Decimal("0.15") * Decimal("0.000001")
    assert price_for(dep(2, model="openai/gpt-4o")).output == Decimal("10.00") * Decimal("0.000001")
    custom = price_for(dep(3, model="gpt-4o", input_cost_per_token=Decimal("0.5")))
    assert custom.input == Decimal("0.5") and custom.output == Decimal("10.00") * Decimal("0.000001")
    assert price_for(dep(4, model="unknown-thing")).input == 0


def test_cost_uses_cached_rate_images_and_audio():
    price = price_for(dep(5, model="gpt-4o"))
    cost = call_cost(price, prompt_tokens=1000, completion_tokens=100, cached_tokens=400)
    assert cost == Decimal("0.0015") + Decimal("0.0005") + Decimal("0.001")  # 600 new, 400 cached, 100 out
    assert call_cost(price_for(dep(6, model="dall-e-3")), images=2) == Decimal("0.080")
    assert call_cost(price_for(dep(7, model="whisper-1")), audio_seconds=10) == Decimal("0.001")
    assert format_cost(Decimal("0.000025000")) == "0.000025" and format_cost(Decimal(0)) == "0"


def test_token_estimates():
    body = {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50}
    assert estimate_prompt_tokens(body) == 101
    assert requested_max_tokens(body, 4096) == 50
    assert requested_max_tokens({"max_tokens": True}, 4096) == 4096
    assert estimate_prompt_tokens({"input": ["abcd", "efgh"]}) == 2


@pytest.mark.parametrize(
    "body",
    [{"api_base": "http://x"}, {"metadata": {"nested": [{"base_url": "http://x"}]}}, {"a": {"b": {"api_key": "k"}}}],
)
def test_client_may_not_set_upstream_anywhere(body):
    import orjson

    with pytest.raises(GatewayError) as refused:
        reject_client_upstream(orjson.dumps(body), body)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "raw",
    [rb'{"api\u005fbase": "http://x"}', rb'{"metadata": {"b\u0061se_url": "http://x"}}', rb'{"\u0061pi_key": "k"}'],
)
def test_json_escapes_do_not_hide_a_forbidden_field(raw):
    import orjson

    with pytest.raises(GatewayError) as refused:
        reject_client_upstream(raw, orjson.loads(raw))
    assert refused.value.status == 400


def test_tool_schemas_may_name_a_base_url_parameter():
    import orjson

    body = {
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "f",
                    "parameters": {"type": "object", "properties": {"base_url": {"type": "string"}}},
                },
            }
        ]
    }
    reject_client_upstream(orjson.dumps(body), body)


def test_signed_handles_roundtrip_and_refuse_forgery_and_other_tenants():
    handle = Handle("file", 3, "file-up", 7, "gpt", requests=5, prompt_tokens=100, max_tokens=50)
    token = wrap(handle, "pepper")
    assert unwrap("file", token, "pepper", organization_id=7, is_master=False) == handle
    assert unwrap("file", token, "pepper", organization_id=None, is_master=True) == handle
    for bad, org in ((token, 8), (token[:-2] + "00", 7), ("file-gw-garbage.sig", 7), (token, None)):
        with pytest.raises(GatewayError) as refused:
            unwrap("file", bad, "pepper", organization_id=org, is_master=False)
        assert refused.value.status == 404
    with pytest.raises(GatewayError):
        unwrap("batch", token, "pepper", organization_id=7, is_master=False)


@pytest.mark.parametrize("payload", [b"5", b"null", b"[1, 2]", b"{}", b"\xff"])
def test_a_signed_but_malformed_handle_is_a_404_not_a_crash(payload):
    import base64

    from apps.proxy.handles import _sign

    encoded = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    token = f"file-gw-{encoded}.{_sign('pepper', b'file' + payload)}"
    with pytest.raises(GatewayError) as refused:
        unwrap("file", token, "pepper", organization_id=7, is_master=False)
    assert refused.value.status == 404


def test_multipart_parser():
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        b"RIFF\r\n\x00\x01\r\n--XyZ--\r\n"
    )
    parts = parse_multipart(b"multipart/form-data; boundary=XyZ", body)
    assert parts[1] == ("file", "a.wav", "audio/wav", b"RIFF\r\n\x00\x01")
    assert form_fields(parts) == {"model": "whisper"}
    with pytest.raises(GatewayError):
        parse_multipart(b"application/json", body)


def _router() -> Router:
    return Router(adapters=build_adapters(), num_retries=2, timeout_seconds=5, cooldown_failures=2, cooldown_seconds=10)


def test_router_prefers_lower_priority_then_least_busy_and_lowest_latency():
    router = _router()
    a, b, c = dep(1, priority=0), dep(2, priority=0), dep(3, priority=1)
    group = Group("m", (a, b, c), strategy="least-busy")
    router._health(a).in_flight = 5
    assert router.pick(group, group.deployments, set()) is b
    assert router.pick(group, group.deployments, {1, 2}) is c  # both priority-0 tried: fall back
    latency = Group("m", (a, b), strategy="lowest-latency")
    router._succeeded(a, 50.0)
    router._succeeded(b, 5.0)
    assert router.pick(latency, latency.deployments, set()) is b


def test_router_weighted_shuffle_respects_zero_weight():
    router = _router()
    group = Group("m", (dep(1, weight=0), dep(2, weight=3)))
    assert {router.pick(group, group.deployments, set()).id for _ in range(50)} == {2}


def test_cooldown_after_repeated_failures_and_on_retry_after():
    router = _router()
    a, b = dep(1), dep(2)
    group = Group("m", (a, b))
    boom = UpstreamError(502, "boom", retryable=True)
    router._failed(a, boom)
    assert not router._health(a).cooling(__import__("time").monotonic())
    router._failed(a, boom)
    assert router.pick(group, group.deployments, set()) is b  # a cools down after 2 failures
    router._failed(b, UpstreamError(429, "slow", retryable=True, retry_after=30))
    assert router.pick(group, group.deployments, set()) is None
    assert 1 <= router._soonest_recovery(group) <= 30
    router._failed(dep(9), UpstreamError(400, "bad input"))  # client errors never cool a deployment
    assert not router._health(dep(9)).cooling(__import__("time").monotonic())


def test_bearer_token_sources_and_effective_models():
    assert bearer_token({b"authorization": b"Bearer sk-1"}) == "sk-1"
    assert bearer_token({b"authorization": b"Basic abc"}) is None
    assert bearer_token({b"x-api-key": b"sk-2"}) == "sk-2"
    assert bearer_token({b"api-key": b"sk-3"}) == "sk-3"
    assert _effective_models([], ["a", "b"], []) == frozenset({"a", "b"})
    assert _effective_models(["a", "c"], ["a", "b"], None) == frozenset({"a"})
    assert _effective_models([], [], []) is None


def _cache(loader, ttl: float = 30.0):
    from apps.proxy.auth import AuthCache

    async def run_sync(fn, *args):
        await asyncio.sleep(0.01)
        return fn(*args)

    return AuthCache(ttl=ttl, master_key="sk-master", run_sync=run_sync, loader=loader)


def _context():
    from apps.proxy.auth import MASTER_CONTEXT

    return dataclasses.replace(MASTER_CONTEXT, is_master=False, key_id=1)


async def test_auth_cache_coalesces_concurrent_misses_and_caches(settings):
    calls = []
    cache = _cache(lambda key_hash: calls.append(key_hash) or _context())
    results = await asyncio.gather(*(cache.authenticate("sk-gw-a") for _ in range(20)))
    assert len(calls) == 1 and all(r.key_id == 1 for r in results)
    await cache.authenticate("sk-gw-a")
    assert len(calls) == 1  # served from the cache
    cache.clear()
    await cache.authenticate("sk-gw-a")
    assert len(calls) == 2


async def test_a_flood_of_unknown_keys_never_evicts_working_ones(settings, monkeypatch):
    from apps.proxy import auth

    monkeypatch.setattr(auth, "MAX_ENTRIES", 5)
    monkeypatch.setattr(auth, "MAX_NEGATIVE_ENTRIES", 5, raising=False)
    calls = []
    cache = _cache(lambda key_hash: calls.append(key_hash) or (_context() if len(calls) == 1 else None))
    await cache.authenticate("sk-gw-good")
    for i in range(12):
        with pytest.raises(GatewayError):
            await cache.authenticate(f"sk-gw-random-{i}")
    assert len(calls) == 13
    await cache.authenticate("sk-gw-good")
    assert len(calls) == 13  # still cached
    with pytest.raises(GatewayError):
        await cache.authenticate("sk-gw-random-11")  # the negative answer is cached too
    assert len(calls) == 13


async def test_a_working_key_past_its_ttl_is_served_while_it_reloads_in_the_background(settings):
    """Stale-while-revalidate for one more TTL: a known key never waits on the database."""
    from django.db import OperationalError

    state = {"ctx": _context(), "calls": 0, "gate": asyncio.Event(), "broken": False}

    def loader(key_hash):
        state["calls"] += 1
        if state["broken"]:
            raise OperationalError("connection refused")
        return state["ctx"]

    cache = _cache(loader, ttl=0.2)
    run_sync = cache._run_sync

    async def gated(fn, *args):
        if state["calls"] >= 1:
            await state["gate"].wait()  # the reload hangs until we let it go
        return await run_sync(fn, *args)

    cache._run_sync = gated
    assert (await cache.authenticate("sk-gw-a")).key_id == 1
    await asyncio.sleep(0.25)  # past the TTL, within the grace
    answer = await asyncio.wait_for(cache.authenticate("sk-gw-a"), timeout=0.1)  # not blocked by the reload
    assert answer.key_id == 1
    state["ctx"] = None  # meanwhile the key was revoked (and its invalidation message lost)
    state["gate"].set()
    for _ in range(100):
        if not cache._loading:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(GatewayError) as refused:
        await cache.authenticate("sk-gw-a")  # the refusal replaced the stale answer
    assert refused.value.status == 401

    # Past the grace the database is asked again in line: down means 503, not a stale answer forever.
    state.update(ctx=_context(), broken=False)
    cache.clear()
    await cache.authenticate("sk-gw-b")
    state["broken"] = True
    await asyncio.sleep(0.45)
    with pytest.raises(GatewayError) as unavailable:
        await cache.authenticate("sk-gw-b")
    assert unavailable.value.status == 503


async def test_auth_cache_same_401_and_master_key(settings):
    cache = _cache(lambda key_hash: None)
    for token in ("sk-gw-unknown", "", None):
        with pytest.raises(GatewayError) as refused:
            await cache.authenticate(token)
        assert refused.value.status == 401 and refused.value.message == "Invalid API key."
    assert (await cache.authenticate("sk-master")).is_master


async def test_auth_cache_expired_context_is_refused_and_db_outage_is_503(settings):
    import time as _time

    from django.db import OperationalError

    cache = _cache(lambda key_hash: dataclasses.replace(_context(), expires_at=_time.time() - 1))
    with pytest.raises(GatewayError) as refused:
        await cache.authenticate("sk-gw-old")
    assert refused.value.status == 401

    def broken(key_hash):
        raise OperationalError("connection refused")

    with pytest.raises(GatewayError) as unavailable:
        await _cache(broken).authenticate("sk-gw-x")
    assert unavailable.value.status == 503 and unavailable.value.headers["retry-after"] == "1"


async def test_resolver_drops_link_local_and_metadata_answers(monkeypatch):
    from aiohttp.resolver import DefaultResolver

    from apps.proxy.resolver import SafeResolver, forbidden_address

    answers = {
        "rebinding.example": ["169.254.169.254"],
        "mixed.example": ["169.254.1.1", "10.0.0.5"],
        "v6-metadata.example": ["fd00:ec2::254"],
    }

    async def fake_resolve(self, host, port=0, family=0):
        return [
            {"hostname": host, "host": ip, "port": port, "family": family, "proto": 0, "flags": 0}
            for ip in answers[host]
        ]

    monkeypatch.setattr(DefaultResolver, "resolve", fake_resolve)
    resolver = SafeResolver()
    assert [a["host"] for a in await resolver.resolve("mixed.example", 80)] == ["10.0.0.5"]
    for host in ("rebinding.example", "v6-metadata.example"):
        with pytest.raises(OSError):
            await resolver.resolve(host, 80)
    assert forbidden_address("::ffff:169.254.169.254") and not forbidden_address("127.0.0.1")


async def test_concurrent_first_requests_wait_for_the_registry_load(monkeypatch):
    """Regression: requests arriving while a fresh worker loads its registry got 503s."""
    from apps.proxy import app as proxy_app_module
    from apps.proxy.registry import Registry

    calls = []

    def load():
        calls.append(1)
        return Registry(groups={"m": Group("m", (dep(1),))}, aliases={}, loaded_at=1e9)

    gateway = proxy_app_module.Gateway()
    gateway._registry_lock = asyncio.Lock()
    gateway.cache_sync = type("Sync", (), {"check_local": lambda self: None})()

    async def run_sync(fn, *args):
        await asyncio.sleep(0.05)
        return fn(*args)

    gateway.run_sync = run_sync
    monkeypatch.setattr(proxy_app_module, "load_registry", load)
    registries = await asyncio.gather(*(gateway.get_registry() for _ in range(20)))
    assert all(r.resolve("m") is not None for r in registries)
    assert len(calls) == 1


def test_same_process_changes_clear_the_caches_without_redis(settings):
    """Embedded default: the admin runs in the proxy's process; its writes bump a local generation."""
    from apps.keys.invalidation import publish_invalidation
    from apps.proxy.cache_sync import CacheSync

    settings.REDIS_URL = ""
    changes: list[str] = []
    sync = CacheSync(redis_url="", on_change=changes.append)
    sync.check_local()
    assert changes == []
    publish_invalidation("key:1")
    sync.check_local()
    sync.check_local()
    assert changes == ["local"]


@pytest.mark.parametrize("raw", ["only-one-part", "{not json", '{"aws_access_key_id": "A"}', "[1, 2]"])
def test_malformed_bedrock_credentials_are_a_502_config_error_not_a_crash(raw):
    from apps.proxy.providers.bedrock import _credentials

    with pytest.raises(GatewayError) as refused:
        _credentials(raw)
    assert refused.value.status == 502


def test_bedrock_credentials_in_both_spellings():
    from apps.proxy.providers.bedrock import _credentials

    assert _credentials("AK:SK") == ("AK", "SK", None)
    assert _credentials('{"aws_access_key_id": "AK", "aws_secret_access_key": "SK", "aws_session_token": "T"}') == (
        "AK",
        "SK",
        "T",
    )


async def test_the_mock_providers_file_store_stays_bounded():
    """Its files live in the worker's memory: the oldest go first, whatever clients upload."""
    from apps.proxy.providers.base import Call
    from apps.proxy.providers.mock import MockAdapter
    from apps.proxy.registry import Deployment

    adapter = MockAdapter()
    adapter.max_files, adapter.max_file_bytes_total, adapter.max_batches = 3, 2500, 2
    dep = Deployment(id=1, model_name="m", provider="mock", model="m")
    ids = []
    for _ in range(6):
        form = [("purpose", None, "text/plain", b"assistants"), ("file", "f", "application/octet-stream", b"x" * 1000)]
        ids.append((await adapter.send(None, dep, Call("files_create", {}, form=form), 5)).obj["id"])
        await adapter.send(None, dep, Call("batches_create", {"input_file_id": ids[-1]}), 5)
    assert list(adapter._files) == ids[-2:]  # 2 x 1000 bytes fit in 2500, 3 would not
    assert len(adapter._batches) == 2
    with pytest.raises(GatewayError):
        await adapter.send(None, dep, Call("files_get", {}, path_args=(ids[0],)), 5)
