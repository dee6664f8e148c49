"""``/v1/files`` and ``/v1/batches``: uploads go to a deployment of the file's model, batches are charged.

A batch submission is one request through the limiter chain with ``ctx.request_units`` set to the
number of requests in its input file and the token estimate of all of them, so the batch limiter
can refuse it up front. File and batch ids are signed handles (``apps.proxy.handles``) that remember
the deployment, the owning organization and those counts.
"""

from __future__ import annotations

import orjson

from apps.proxy import listing
from apps.proxy.asgi_io import encode_headers, parse_json_object, send_json, send_response
from apps.proxy.calls import ProxyGateway, reply_object, resolve
from apps.proxy.context import RequestContext
from apps.proxy.errors import GatewayError, bad_request, model_not_allowed
from apps.proxy.handles import Handle, client_handle, wrap, wrap_batch
from apps.proxy.limited import run_limited
from apps.proxy.multipart import form_fields, parse_multipart
from apps.proxy.pricing import price_for, token_cost
from apps.proxy.providers import Call
from apps.proxy.registry import Deployment
from apps.proxy.tokens import (
    estimate_prompt_tokens,
    reject_client_upstream,
    reject_client_upstream_form,
    requested_max_tokens,
)

PASSTHROUGH_OPS = frozenset({"files_get", "files_content", "batches_get", "batches_cancel"})


def batch_file_stats(content: bytes, default_max_tokens: int) -> tuple[str, int, int, int]:
    """(model, requests, prompt tokens, max output tokens) of a batch JSONL file; 400 when malformed."""
    model, requests, prompt, output = "", 0, 0, 0
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
            body = item["body"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise bad_request(f"Line {number} of the batch file is not a valid request.") from None
        if not isinstance(body, dict):
            raise bad_request(f"Line {number} of the batch file has no JSON body.")
        reject_client_upstream(line, body)  # each line reaches an upstream just like a request body
        line_model = str(body.get("model", ""))
        if model and line_model != model:
            raise bad_request("Every request in a batch file must use the same model.")
        model = line_model
        requests += 1
        prompt += estimate_prompt_tokens(body)
        output += requested_max_tokens(body, default_max_tokens)
    if not requests:
        raise bad_request("The batch file contains no requests.")
    return model, requests, prompt, output


def batch_file_for(content: bytes, upstream_model: str) -> bytes:
    """The batch file as the upstream gets it: every request names the deployment's own model.

    The upload was checked against the key's allowed models and is charged for the model it names;
    the lines' own ``model`` (a public name, an alias, or anything else) must not pick what runs.
    """
    out = []
    for line in content.splitlines():
        if line.strip():
            item = orjson.loads(line)  # (already validated by batch_file_stats)
            out.append(orjson.dumps({**item, "body": {**item["body"], "model": upstream_model}}))
    return b"\n".join(out) + (b"\n" if content.endswith(b"\n") else b"")


async def _deployment_for(gw: ProxyGateway, ctx: RequestContext, model: str, op: str) -> Deployment:
    _registry, group, deployments, _ = await resolve(gw, ctx, op, model)
    dep = gw.router.pick(group, deployments, set()) if deployments else None
    if dep is None:
        raise GatewayError(503, f"No deployment of '{model}' can take files right now.", kind="no_healthy_deployment")
    return dep


async def file_create(gw: ProxyGateway, ctx: RequestContext, raw: bytes, headers: dict[bytes, bytes], send) -> None:
    parts = parse_multipart(headers.get(b"content-type", b""), raw)
    reject_client_upstream_form(part[0] for part in parts)
    fields = form_fields(parts)
    content = next((p[3] for p in parts if p[0] == "file" and p[1] is not None), None)
    if content is None:
        raise bad_request("A 'file' part is required.", param="file")
    model = fields.get("model") or (headers.get(b"x-gateway-model") or b"").decode("latin-1")
    requests = prompt = output = 0
    batch = fields.get("purpose") == "batch"
    if batch:
        file_model, requests, prompt, output = batch_file_stats(content, 4096)
        if model and file_model and file_model != model:
            raise bad_request(
                f"The batch file's requests use '{file_model}' but the upload names '{model}'.", param="model"
            )
        model = model or file_model
    if not model:
        raise bad_request("Name the model: a 'model' form field or the x-gateway-model header.", param="model")
    dep = await _deployment_for(gw, ctx, model, "files_create")
    upload = [p for p in parts if p[0] != "model"]
    if batch:
        upload = [
            (n, f, t, batch_file_for(d, dep.model) if n == "file" and f is not None else d) for n, f, t, d in upload
        ]
    reply = await gw.adapters[dep.provider].send(
        gw.session, dep, Call("files_create", {}, form=upload), dep.timeout_seconds or gw.settings_timeout
    )
    obj = reply_object(reply, dep.provider)
    handle = Handle("file", dep.id, str(obj.get("id")), ctx.key.organization_id, model, requests, prompt, output)
    obj["id"] = wrap(handle, gw.secret)
    await listing.record(gw, "file", handle, obj["id"], obj)
    await send_json(send, 200, obj, gw.common_headers(ctx.request_id, ctx.started_at, deployment=dep.label))


async def batch_create(gw: ProxyGateway, ctx: RequestContext, raw: bytes, send) -> None:
    body = parse_json_object(raw)
    reject_client_upstream(raw, body)
    handle = client_handle("file", str(body.get("input_file_id", "")), gw.secret, ctx)
    if not (ctx.key.allows_model(handle.model)):
        raise model_not_allowed(handle.model)
    if handle.requests < 1:
        # Only a file uploaded with purpose "batch" was counted (requests, tokens) for the batch limiter.
        raise bad_request("The input file was not uploaded with purpose 'batch'.", param="input_file_id")
    registry = await gw.get_registry()
    dep = registry.by_id.get(handle.deployment_id)
    if dep is None:
        raise GatewayError(404, "The deployment holding this file no longer exists.", kind="not_found")
    ctx.model, ctx.llm_provider, ctx.deployment_id, ctx.body = handle.model, dep.provider, dep.id, body
    ctx.deployment, ctx.group = dep, registry.group_of(dep)  # the capacities the limiters charge
    ctx.request_units = max(1, handle.requests)
    ctx.estimated_prompt_tokens, ctx.max_output_tokens = handle.prompt_tokens, handle.max_tokens
    ctx.estimated_cost = token_cost(
        price_for(dep), prompt_tokens=handle.prompt_tokens, completion_tokens=handle.max_tokens
    )

    async def create() -> None:
        call = Call("batches_create", {**body, "input_file_id": handle.upstream_id})
        reply = await gw.adapters[dep.provider].send(gw.session, dep, call, dep.timeout_seconds or gw.settings_timeout)
        upstream_obj = reply_object(reply, dep.provider)
        obj = wrap_batch(upstream_obj, handle, gw.secret)
        batch = Handle("batch", dep.id, str(upstream_obj.get("id")), handle.organization_id)
        await listing.record(gw, "batch", batch, obj["id"], obj)
        headers = gw.common_headers(ctx.request_id, ctx.started_at, deployment=dep.label)
        await send_json(send, 200, obj, headers + encode_headers(ctx.response_headers))

    await run_limited(gw, ctx, dep, send, create)


async def passthrough(gw: ProxyGateway, ctx: RequestContext, op: str, args: tuple[str, ...], send) -> None:
    kind = "batch" if op.startswith("batches") else "file"
    handle = client_handle(kind, args[0], gw.secret, ctx)
    registry = await gw.get_registry()
    dep = registry.by_id.get(handle.deployment_id)
    if dep is None:
        raise GatewayError(404, f"The deployment holding this {kind} no longer exists.", kind="not_found")
    reply = await gw.adapters[dep.provider].send(
        gw.session, dep, Call(op, {}, path_args=(handle.upstream_id,)), dep.timeout_seconds or gw.settings_timeout
    )
    headers = gw.common_headers(ctx.request_id, ctx.started_at, deployment=dep.label)
    if op == "files_content":
        await send_response(send, 200, reply.body, headers, reply.content_type)
        return
    obj = reply_object(reply, dep.provider)
    obj = wrap_batch(obj, handle, gw.secret) if kind == "batch" else {**obj, "id": args[0]}
    await send_json(send, 200, obj, headers)
