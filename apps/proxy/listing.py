"""``GET /v1/files``, ``GET /v1/batches`` and ``DELETE /v1/files/{id}``: only what the key's organization created.

An upstream account is shared by every tenant with a deployment on it, so its own list cannot be scoped;
these lists are built from the ``GatewayObject`` rows written when a file or batch was created through
the gateway. Batches are re-read from their upstream for the page being answered (their status moves);
files are answered from the recorded object. Deleting goes to the file's upstream and drops its row.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qs

from apps.proxy.asgi_io import send_json
from apps.proxy.calls import ProxyGateway, reply_object
from apps.proxy.context import RequestContext
from apps.proxy.errors import GatewayError, bad_request
from apps.proxy.handles import Handle, client_handle, unwrap, wrap_batch
from apps.proxy.models import GatewayObject
from apps.proxy.providers import Call

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
REFRESH_CONCURRENCY = 8


def _scope(queryset, ctx: RequestContext):
    """The key's organization's rows (the master key sees all): the same rule the signed handles apply."""
    if ctx.key.is_master:
        return queryset
    return queryset.filter(organization_id=ctx.key.organization_id)


def record_sync(kind: str, handle: Handle, public_id: str, purpose: str, snapshot: dict[str, Any]) -> None:
    GatewayObject.objects.create(
        kind=kind,
        organization_id=handle.organization_id,
        deployment_id=handle.deployment_id,
        upstream_id=handle.upstream_id[:255],
        public_id=public_id,
        purpose=purpose[:64],
        snapshot=snapshot,
    )


async def record(gw: ProxyGateway, kind: str, handle: Handle, public_id: str, snapshot: dict[str, Any]) -> None:
    """Remember a created file/batch for listing; the object exists upstream either way, so never raises."""
    try:
        await gw.run_sync(record_sync, kind, handle, public_id, str(snapshot.get("purpose") or ""), snapshot)
    except Exception:
        logger.exception("could not record %s %s for listing", kind, handle.upstream_id[:80])


def _query(scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v[-1] for k, v in parse_qs(raw).items()}


def _limit(query: dict[str, str]) -> int:
    try:
        limit = int(query.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise bad_request("'limit' must be a number.", param="limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_request(f"'limit' must be between 1 and {MAX_LIMIT}.", param="limit")
    return limit


def _page_sync(kind: str, ctx: RequestContext, query: dict[str, str], after: Handle | None) -> tuple[list, bool]:
    rows = _scope(GatewayObject.objects.filter(kind=kind), ctx)
    if kind == "file" and query.get("purpose"):
        rows = rows.filter(purpose=query["purpose"])
    ascending = query.get("order") == "asc"
    if after is not None:
        cursor = (
            _scope(GatewayObject.objects.filter(kind=kind), ctx)
            .filter(deployment_id=after.deployment_id, upstream_id=after.upstream_id)
            .values_list("pk", flat=True)
            .first()
        )
        if cursor is None:
            return [], False
        rows = rows.filter(pk__gt=cursor) if ascending else rows.filter(pk__lt=cursor)
    limit = _limit(query)
    found = list(rows.order_by("pk" if ascending else "-pk").values("public_id", "snapshot")[: limit + 1])
    return found[:limit], len(found) > limit


async def _page(gw: ProxyGateway, kind: str, ctx: RequestContext, scope) -> tuple[list, bool]:
    query = _query(scope)
    after = None
    if query.get("after"):
        value = query["after"]
        if not value.isascii():
            raise GatewayError(404, f"No such {kind}.", code="not_found", kind="not_found")
        after = unwrap(kind, value, gw.secret, organization_id=ctx.key.organization_id, is_master=ctx.key.is_master)
    _limit(query)  # a bad limit is the client's 400, not the database thread's error
    return await gw.run_sync(_page_sync, kind, ctx, query, after)


async def _send_list(gw: ProxyGateway, ctx: RequestContext, send, data: list[dict[str, Any]], has_more: bool) -> None:
    body = {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
    await send_json(send, 200, body, gw.common_headers(ctx.request_id, ctx.started_at))


async def files_list(gw: ProxyGateway, ctx: RequestContext, scope, send) -> None:
    rows, has_more = await _page(gw, "file", ctx, scope)
    await _send_list(gw, ctx, send, [{**row["snapshot"], "id": row["public_id"]} for row in rows], has_more)


async def batches_list(gw: ProxyGateway, ctx: RequestContext, scope, send) -> None:
    rows, has_more = await _page(gw, "batch", ctx, scope)
    registry = await gw.get_registry()
    gate = asyncio.Semaphore(REFRESH_CONCURRENCY)

    async def current(row: dict[str, Any]) -> dict[str, Any]:
        recorded = {**row["snapshot"], "id": row["public_id"]}
        handle = unwrap("batch", row["public_id"], gw.secret, organization_id=None, is_master=True)
        dep = registry.by_id.get(handle.deployment_id)
        adapter = gw.adapters.get(dep.provider) if dep is not None else None
        if adapter is None or not adapter.supports("batches_get"):
            return recorded
        try:
            async with gate:
                call = Call("batches_get", {}, path_args=(handle.upstream_id,))
                reply = await adapter.send(gw.session, dep, call, dep.timeout_seconds or gw.settings_timeout)
            return wrap_batch(reply_object(reply, dep.provider), handle, gw.secret)
        except GatewayError:
            return recorded  # the upstream is down or forgot it: what the client saw at creation

    data = await asyncio.gather(*(current(row) for row in rows))
    await _send_list(gw, ctx, send, list(data), has_more)


def _forget_sync(handle: Handle) -> None:
    GatewayObject.objects.filter(
        kind="file", deployment_id=handle.deployment_id, upstream_id=handle.upstream_id
    ).delete()


async def file_delete(gw: ProxyGateway, ctx: RequestContext, file_id: str, send) -> None:
    handle = client_handle("file", file_id, gw.secret, ctx)
    registry = await gw.get_registry()
    dep = registry.by_id.get(handle.deployment_id)
    if dep is None:
        raise GatewayError(404, "The deployment holding this file no longer exists.", kind="not_found")
    adapter = gw.adapters[dep.provider]
    if not adapter.supports("files_delete"):
        raise bad_request(f"Files on {dep.provider} deployments cannot be deleted through the gateway.")
    call = Call("files_delete", {}, path_args=(handle.upstream_id,))
    reply = await adapter.send(gw.session, dep, call, dep.timeout_seconds or gw.settings_timeout)
    obj = reply_object(reply, dep.provider)
    await gw.run_sync(_forget_sync, handle)
    headers = gw.common_headers(ctx.request_id, ctx.started_at, deployment=dep.label)
    await send_json(send, 200, {**obj, "id": file_id, "object": "file"}, headers)
