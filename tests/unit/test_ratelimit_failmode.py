"""Redis down: a closed port and a server that never answers, in fail mode "open" and "closed"."""

from __future__ import annotations

import asyncio
import socket

import pytest
from prometheus_client import REGISTRY

from apps.ratelimit.backends import BackendUnavailable
from apps.ratelimit.backends.redis_backend import RedisBackend
from apps.ratelimit.errors import LimiterUnavailableError, ProxyRateLimitError
from apps.ratelimit.state import limiter_state
from tests.unit.ratelimit_helpers import call, key_context, make_chain, ok, request, scope


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_server():
    """A listening socket that never answers (the kernel completes the handshake): Redis hung."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def errors(mode: str) -> float:
    labels = {"mode": mode, "operation": "reserve"}
    return REGISTRY.get_sample_value("gateway_ratelimit_backend_errors_total", labels) or 0


@pytest.mark.parametrize("where", ["closed_port", "silent_server"])
async def test_fail_open_lets_the_request_through_and_counts_it(settings, where, request: pytest.FixtureRequest):
    settings.RATELIMIT_FAIL_MODE = "open"
    port = closed_port() if where == "closed_port" else request.getfixturevalue("silent_server")
    chain = make_chain(RedisBackend(f"redis://127.0.0.1:{port}/0", timeout_ms=50))
    key = key_context(scope("key", rpm_limit=1, max_parallel_requests=1))
    before, reasons_before = errors("open"), fail_open_by_reason()
    for _ in range(3):  # over the key's limit of 1: nothing is counted while Redis is away
        ctx = _request(key)
        await call(chain, ctx, ok())
        assert limiter_state(ctx).plan.skipped
    assert errors("open") == before + 3
    # Every fail-open decision is counted with its reason: the first finds the fault, the breaker then
    # answers the next ones at once.
    first = "connect_error" if where == "closed_port" else "stalled"
    reasons = {r: fail_open_by_reason()[r] - reasons_before[r] for r in reasons_before}
    assert reasons == {**dict.fromkeys(reasons_before, 0), first: 1, "breaker_open": 2}


@pytest.mark.parametrize("where", ["closed_port", "silent_server"])
async def test_fail_closed_answers_503_in_openai_shape(settings, where, request: pytest.FixtureRequest):
    settings.RATELIMIT_FAIL_MODE = "closed"
    port = closed_port() if where == "closed_port" else request.getfixturevalue("silent_server")
    chain = make_chain(RedisBackend(f"redis://127.0.0.1:{port}/0", timeout_ms=50))
    ctx = _request(key_context(scope("key", rpm_limit=100)))
    before = errors("closed")
    with pytest.raises(LimiterUnavailableError) as info:
        await call(chain, ctx, ok(503))
    error = info.value
    assert error.status == 503 and error.status_code == 503
    body = error.to_body()["error"]
    assert body["type"] == "service_unavailable" and body["code"] == "rate_limiter_unavailable"
    assert body["llm_provider"] == "openai" and error.model == "gpt-4o-mini"
    assert error.headers["retry-after"] == "1"
    assert errors("closed") == before + 1


async def test_the_timeout_bounds_a_hung_redis(silent_server):
    backend = RedisBackend(f"redis://127.0.0.1:{silent_server}/0", timeout_ms=50)
    key = key_context(scope("key", rpm_limit=1))
    ctx = _request(key)
    chain = make_chain(backend)
    for mw in chain.middleware:
        await mw.pre_call(ctx)
    # Without the bound this would hang forever on the silent server; wait_for only guards the test.
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(backend.reserve(limiter_state(ctx).plan.checks), timeout=30)


def fail_open_by_reason() -> dict[str, float]:
    reasons = ("connect_error", "connection_lost", "stalled", "breaker_open", "error_reply", "deadline")
    return {r: REGISTRY.get_sample_value("gateway_ratelimit_fail_open_total", {"reason": r}) or 0 for r in reasons}


def _request(key):
    return request(key)


async def test_a_failed_settlement_is_retried_so_slots_come_back(monkeypatch):
    """Redis hiccups after the call: the slot is released by a background retry, not only by its expiry."""
    from apps.ratelimit import engine
    from apps.ratelimit.backends.memory import MemoryBackend

    class FlakySettle(MemoryBackend):
        failures = 1

        async def _settle(self, ops):
            if self.failures:
                self.failures -= 1
                raise BackendUnavailable("blip")
            await super()._settle(ops)

    monkeypatch.setattr(engine, "SETTLE_RETRY_DELAYS", (0.01, 0.01))
    backend = FlakySettle()
    chain = make_chain(backend, ["apps.ratelimit.middleware.ParallelRequestLimiter"])
    key = key_context(scope("key", max_parallel_requests=1))
    await call(chain, _request(key), ok())
    with pytest.raises(ProxyRateLimitError):  # the blip left the slot taken ...
        await call(chain, _request(key), ok())
    for _ in range(100):  # ... until the retry gives it back
        await asyncio.sleep(0.01)
        if not engine._retries:
            break
    await call(chain, _request(key), ok())
