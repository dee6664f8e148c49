"""The admin's "test connection": one request for one output token, straight at the deployment.

The mock provider answers locally. HTTP providers get the smallest request their API accepts; the
answer is reduced to ok/status/latency and the upstream's error message with the credential (and
anything that looks like a key) scrubbed out, because it ends up in the admin and the audit log.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.error
import urllib.request

from apps.teams.deployment_health import ConnectionResult

PROBE_TIMEOUT_SECONDS = 10.0
DETAIL_MAX = 200
_KEYLIKE = re.compile(r"(sk|pk|key|api)[-_][A-Za-z0-9_\-*]{6,}", re.IGNORECASE)
DEFAULT_BASES = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}


def _scrub(text: str, secret: str) -> str:
    if secret:
        text = text.replace(secret, "***")
    return _KEYLIKE.sub("***", text)[:DETAIL_MAX]


def _request_for(deployment, api_key: str) -> tuple[str, dict, dict] | None:
    base = (deployment.api_base or DEFAULT_BASES.get(deployment.provider, "")).rstrip("/")
    chat = {"model": deployment.model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
    if deployment.provider in ("openai", "openai_compatible") and base:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return f"{base}/chat/completions", headers, chat
    if deployment.provider == "azure" and base:
        version = deployment.api_version or "2024-10-21"
        url = f"{base}/openai/deployments/{deployment.model}/chat/completions?api-version={version}"
        return url, {"api-key": api_key}, {k: v for k, v in chat.items() if k != "model"}
    if deployment.provider == "anthropic" and base:
        headers = {"x-api-key": api_key, "anthropic-version": "2023-06-01"}
        return f"{base}/v1/messages", headers, chat
    return None


def probe_deployment(deployment) -> ConnectionResult:
    started = time.perf_counter()
    if deployment.provider == "mock":
        return ConnectionResult(True, 200, (time.perf_counter() - started) * 1000, "the built-in mock answers locally")
    api_key = deployment.get_credentials() if deployment.has_credentials else ""
    spec = _request_for(deployment, api_key)
    if spec is None:
        return ConnectionResult(False, None, 0.0, f"no connection test for provider {deployment.provider!r} yet")
    url, headers, body = spec
    if not url.startswith(("http://", "https://")):
        return ConnectionResult(False, None, 0.0, "api_base is not an http(s) URL")
    request = urllib.request.Request(  # noqa: S310 - scheme checked above; api_base validated on save
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **headers}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_SECONDS) as response:  # noqa: S310
            response.read(65536)
            elapsed = (time.perf_counter() - started) * 1000
            return ConnectionResult(True, response.status, elapsed, "the upstream answered")
    except urllib.error.HTTPError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        detail = exc.read(4096).decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(detail).get("error", {}).get("message", detail)
        return ConnectionResult(False, exc.code, elapsed, _scrub(str(detail), api_key) or exc.reason)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        elapsed = (time.perf_counter() - started) * 1000
        reason = getattr(exc, "reason", exc)
        return ConnectionResult(False, None, elapsed, _scrub(f"could not connect: {reason}", api_key))
