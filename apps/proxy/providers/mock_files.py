"""The mock provider's files and batches: a little in-process store, like a provider's remote one.

Batches stay ``validating``: the mock does not run them; the gateway's handling of ids, charging and
tenant isolation is what it exists to exercise.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from apps.proxy.providers.base import Call, Usage, upstream_error
from apps.proxy.registry import Deployment


class MockFilesMixin:
    name = "mock"
    _files: dict[str, dict[str, Any]]
    _batches: dict[str, dict[str, Any]]
    # The store lives in the worker's memory (and demo deployments may well stay in a real install):
    # oldest first out beyond these, so uploads cannot grow a worker without bound.
    max_files = 200
    max_file_bytes_total = 64 * 1024 * 1024
    max_batches = 2000

    def _keep_bounded(self) -> None:
        total = sum(f["bytes"] for f in self._files.values())
        while self._files and (len(self._files) > self.max_files or total > self.max_file_bytes_total):
            oldest = next(iter(self._files))
            total -= self._files.pop(oldest)["bytes"]
        while len(self._batches) > self.max_batches:
            self._batches.pop(next(iter(self._batches)))

    def _files_create(self, dep: Deployment, call: Call, model: str):
        content = next((p[3] for p in call.form or [] if p[0] == "file"), b"")
        purpose = next((p[3].decode() for p in call.form or [] if p[0] == "purpose"), "batch")
        file_id = "file-" + uuid.uuid4().hex[:24]
        self._files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": "input.jsonl",
            "purpose": purpose,
            "status": "processed",
            "_content": content,
        }
        self._keep_bounded()
        return {k: v for k, v in self._files[file_id].items() if not k.startswith("_")}, Usage(reported=True)

    def _files_get(self, dep: Deployment, call: Call, model: str):
        found = self._files.get(call.path_args[0])
        if not found:
            raise upstream_error(self.name, 404, b'{"error": {"message": "No such file."}}', {})
        return {k: v for k, v in found.items() if not k.startswith("_")}, Usage(reported=True)

    def _files_content(self, dep: Deployment, call: Call, model: str):
        self._files_get(dep, call, model)
        return self._files[call.path_args[0]]["_content"], Usage(reported=True)

    def _files_delete(self, dep: Deployment, call: Call, model: str):
        self._files_get(dep, call, model)
        del self._files[call.path_args[0]]
        return {"id": call.path_args[0], "object": "file", "deleted": True}, Usage(reported=True)

    def _batches_create(self, dep: Deployment, call: Call, model: str):
        batch_id = "batch_" + uuid.uuid4().hex[:24]
        self._batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": call.body.get("endpoint"),
            "errors": None,
            "input_file_id": call.body.get("input_file_id"),
            "completion_window": call.body.get("completion_window", "24h"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": call.body.get("metadata"),
        }
        self._keep_bounded()
        return self._batches[batch_id], Usage(reported=True)

    def _batches_get(self, dep: Deployment, call: Call, model: str):
        found = self._batches.get(call.path_args[0])
        if not found:
            raise upstream_error(self.name, 404, b'{"error": {"message": "No such batch."}}', {})
        return found, Usage(reported=True)

    def _batches_cancel(self, dep: Deployment, call: Call, model: str):
        found, usage = self._batches_get(dep, call, model)
        found["status"] = "cancelled"
        return found, usage

    def _batches_list(self, dep: Deployment, call: Call, model: str):
        return {"object": "list", "data": list(self._batches.values()), "has_more": False}, Usage(reported=True)
