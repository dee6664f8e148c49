"""Counters in a Redis Cluster: each slot's share of a plan is one atomic script, shared capacity two-phase.

A cluster runs a script only over keys of one slot, so counter names carry a hash tag
(``apps.ratelimit.plan.counter_key``): everything of one organization (its keys, teams, end users,
per-model limits, budgets, sessions) is ``{o:<id>}``, and what tenants of several organizations share
has its own tag: a user (who may belong to several organizations) ``{u:<id>}``, a deployment's capacity
``{d:<id>}``, a model group's priority counters ``{g:<digest>}``. A typical request's plan lies in one
slot and costs one ``EVALSHA``, exactly as on a single Redis.

A plan that spans several slots is reserved in all of them at once (one script per slot, sent in the
same loop turn, so the request waits one round trip): each script still checks and charges its own
counters all-or-nothing. If every part admits, the request is admitted; if any part refuses (or needs
a budget seeded, or its master does not answer), the parts that did charge are given back at once
(the settle script with the negated amounts, slots removed) before the refusal is returned. So no
counter is ever charged past its limit: a part only charges what fits. What the second phase costs is
the other direction: for the moment between a part's charge and its rollback, the charge is visible,
and a concurrent request on the same counter may be refused although the final state would have
admitted it (measured in the tests as "never more than the limit, and exactly the limit once traffic
stops competing"). A worker that dies between the two phases leaves its charge behind: windows slide
out within their minute, slots are leases and end within ``RATELIMIT_SLOT_TTL_SECONDS``; both err on
the refusing side, never over-admission. A rollback that fails (its master went away) is logged and
likewise left to the window and the lease.
"""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache

from apps.ratelimit.backends.base import BackendUnavailable, Seeder, SeedNeeded
from apps.ratelimit.backends.redis_backend import RedisBackend
from apps.ratelimit.backends.resp_cluster import RespCluster, slot_of
from apps.ratelimit.plan import SLOTS, Check, Refusal

log = logging.getLogger(__name__)


@lru_cache(maxsize=65_536)
def _slot(key: str) -> int:
    return slot_of(key)


def _by_slot(keys: list[str]) -> list[list[int]]:
    """Indexes of ``keys`` grouped by slot, in order of first appearance."""
    groups: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(_slot(key), []).append(index)
    return list(groups.values())


class ClusterBackend(RedisBackend):
    name = "redis-cluster"

    def __init__(
        self,
        nodes: list[tuple[str, int]],
        *,
        timeout_ms: int = 500,
        seeder: Seeder | None = None,
        username: str = "",
        password: str = "",
        tls: bool = False,
    ) -> None:
        super().__init__("", timeout_ms=timeout_ms, seeder=seeder)
        self.nodes = nodes
        self._options = {"username": username, "password": password, "tls": tls}
        self.rollbacks = 0  # parts given back because another part refused (for the tests)

    def _new_client(self) -> RespCluster:
        return RespCluster(self.nodes, stall_seconds=self.timeout, **self._options)

    async def _execute(self, key: str, *args: object) -> object:
        client = self._redis()
        return await self._call(lambda: client.execute_on(key, *args))

    async def _reserve_once(self, checks: list[Check], allow_missing: bool = False) -> Refusal | None:
        parts = _by_slot([check.key for check in checks])
        if len(parts) == 1:
            return await super()._reserve_once(checks, allow_missing)
        results = await asyncio.gather(
            *(super(ClusterBackend, self)._reserve_once([checks[i] for i in part], allow_missing) for part in parts),
            return_exceptions=True,
        )
        refusal: Refusal | None = None
        seed: list[int] = []
        failure: BaseException | None = None
        charged: list[Check] = []
        for part, result in zip(parts, results, strict=True):
            if isinstance(result, SeedNeeded):
                seed.extend(part[i] for i in result.indexes)
            elif isinstance(result, Refusal):
                if refusal is None or part[result.index] < refusal.index:
                    refusal = Refusal(part[result.index], result.retry_ms, result.used)
            elif isinstance(result, BaseException):
                failure = failure or result
            else:
                charged.extend(checks[i] for i in part)
        if failure is None and refusal is None and not seed:
            return None
        if charged:
            await self._roll_back(charged)
        if failure is not None:
            raise failure
        if refusal is not None:
            return refusal
        raise SeedNeeded(sorted(seed))

    async def _roll_back(self, checks: list[Check]) -> None:
        """Give back what the admitting parts charged: the request as a whole was not admitted."""
        ops = [(check, 0 if check.kind == SLOTS else -int(check.amount)) for check in checks if not check.check_only]
        self.rollbacks += 1
        try:
            await self._settle(ops)
        except BackendUnavailable as exc:
            # Left to the window (a minute) and the lease: the charge errs on the refusing side.
            log.warning("rate-limit rollback of %d counters failed (%s); they expire on their own", len(ops), exc)

    async def _settle(self, ops: list[tuple[Check, int]]) -> None:
        parts = _by_slot([check.key for check, _delta in ops])
        if len(parts) == 1:
            return await super()._settle(ops)
        results = await asyncio.gather(
            *(super(ClusterBackend, self)._settle([ops[i] for i in part]) for part in parts), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return None

    async def _renew(self, leases: list[tuple[tuple[str, str], int]]) -> list[int]:
        parts = _by_slot([key for (key, _member), _ttl in leases])
        if len(parts) == 1:
            return await super()._renew(leases)
        results = await asyncio.gather(
            *(super(ClusterBackend, self)._renew([leases[i] for i in part]) for part in parts), return_exceptions=True
        )
        lost: list[int] = []
        for part, result in zip(parts, results, strict=True):
            if isinstance(result, BaseException):
                raise result  # renew_leases retries all of them next round (renewing twice is harmless)
            lost.extend(part[i] for i in result)
        return lost
