"""One chat request for one output token, through the proxy's own adapter: the admin's "test connection"
and the scheduled background probes (apps/monitoring/probes.py).

Going through ``apps.proxy.providers`` means the probe builds the same URL, headers and signature
(Azure's api-version, Anthropic's headers, Gemini, Bedrock's SigV4) as real traffic, and the mock
provider answers locally. The outcome is reduced to ok/status/latency and the upstream's message
with the credential (and anything that looks like a key) scrubbed out, because it is shown in the
admin and kept in the audit log.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
from asgiref.sync import async_to_sync

from apps.proxy.errors import GatewayError, scrub_secrets
from apps.proxy.providers import Call, adapter_for
from apps.proxy.registry import deployment_from_row
from apps.proxy.resolver import SafeResolver

PROBE_TIMEOUT_SECONDS = 10.0
DETAIL_MAX = 200


@dataclass(frozen=True)
class ConnectionResult:
    ok: bool
    status: int | None
    latency_ms: float
    detail: str

    @property
    def summary(self) -> str:
        status = f"HTTP {self.status}, " if self.status is not None else ""
        return f"{'OK' if self.ok else 'failed'} ({status}{self.latency_ms:.0f} ms): {self.detail}"


def _scrub(text: str, secret: str) -> str:
    return scrub_secrets(text, secret, limit=DETAIL_MAX)


async def _send(dep, timeout: float):
    adapter = adapter_for(dep.provider)
    if adapter is None or not adapter.supports("chat"):
        return None
    call = Call(
        op="chat", body={"model": dep.model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    )
    # The same guards as the proxy's pool: DNS answers pointing at metadata/link-local (or private, when those
    # are off) addresses are refused at connect time, no cookie is kept, and the adapter follows no redirect.
    connector = aiohttp.TCPConnector(resolver=SafeResolver())
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        return await asyncio.wait_for(adapter.send(session, dep, call, timeout), timeout + 1)


def probe_deployment(deployment) -> ConnectionResult:
    """Probe one ``ModelDeployment`` row from sync code (the admin's action)."""
    return async_to_sync(probe_deployment_async)(deployment)


async def probe_deployment_async(deployment) -> ConnectionResult:
    """Probe one ``ModelDeployment`` row (already loaded: no query here), for callers that probe many at once."""
    started = time.perf_counter()
    dep = deployment_from_row(deployment)
    if dep is None:
        why = "unusable deployment: unsafe api_base, control characters or undecryptable credentials"
        return ConnectionResult(False, None, 0.0, why)
    timeout = min(deployment.timeout_seconds or PROBE_TIMEOUT_SECONDS, PROBE_TIMEOUT_SECONDS)
    try:
        reply = await _send(dep, timeout)
    except GatewayError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        status = getattr(exc, "upstream_status", None) or exc.status
        detail = getattr(exc, "operator_detail", "") or exc.message
        return ConnectionResult(False, status, elapsed, _scrub(detail, dep.api_key))
    except TimeoutError:
        return ConnectionResult(False, None, (time.perf_counter() - started) * 1000, "no answer in time")
    elapsed = (time.perf_counter() - started) * 1000
    if reply is None:
        return ConnectionResult(False, None, 0.0, f"provider {deployment.provider!r} has no chat adapter")
    where = "answered locally (built-in mock)" if deployment.provider == "mock" else "the upstream answered"
    return ConnectionResult(True, getattr(reply, "status", 200), elapsed, where)
