"""What the limiters charge a response-cache hit (``ctx.cache_hit``), on the memory backend and on Redis:
by default a request (RPM, parallel slots), never tokens or budget; nothing with
``PROXY_CACHE_HITS_COUNT_AGAINST_LIMITS=none``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from apps.ratelimit.errors import ProxyRateLimitError
from tests.unit.ratelimit_helpers import BACKENDS, call, key_context, make_backend, make_chain, ok, request, scope

pytestmark = pytest.mark.parametrize("backend_kind", BACKENDS)


def hit(key, **fields):
    return request(key, cache_hit=True, estimated_cost=Decimal("0.01"), **fields)


async def test_a_hit_counts_as_a_request_but_spends_no_tokens_and_no_budget(backend_kind, settings):
    settings.PROXY_CACHE_HITS_COUNT_AGAINST_LIMITS = "requests"
    chain = make_chain(make_backend(backend_kind))
    key = key_context(scope("key", rpm_limit=3, tpm_limit=25, max_budget="0.01"))
    # The budget is spent and the tokens nearly: a miss would be refused, hits are not.
    await call(chain, request(key, estimated_cost=Decimal("0.01")), ok(cost=Decimal("0.01"), prompt_tokens=20))
    await call(chain, hit(key), ok())
    await call(chain, hit(key), ok())
    with pytest.raises(ProxyRateLimitError) as refused:  # the fourth request of the minute
        await call(chain, hit(key), ok())
    assert refused.value.limit_type == "requests"


async def test_with_none_a_hit_counts_against_nothing(backend_kind, settings):
    settings.PROXY_CACHE_HITS_COUNT_AGAINST_LIMITS = "none"
    chain = make_chain(make_backend(backend_kind))
    key = key_context(scope("key", rpm_limit=1, max_parallel_requests=1, max_budget="0.01"))
    await call(chain, request(key, estimated_cost=Decimal("0.01")), ok(cost=Decimal("0.01")))
    for _ in range(5):
        await call(chain, hit(key), ok())
    with pytest.raises(ProxyRateLimitError):  # a miss still is
        await call(chain, request(key), ok())
