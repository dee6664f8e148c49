"""S3-compatible storage: each batch is one JSONL object (one record per line).

Object key: ``<prefix>/dt=<YYYY-MM-DD>/hour=<HH>/<batch id>.jsonl`` from the batch's first record, where
the batch id is a hash of the content: a retried batch overwrites its own object instead of leaving a
duplicate. botocore's own retries are off (the sink's backoff decides), timeouts are the sink's.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import lru_cache

import botocore.session
import orjson
import urllib3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from apps.sinks.transports import DeliveryError, SinkTarget


def object_key(target: SinkTarget, records: list[bytes], body: bytes) -> str:
    first = orjson.loads(records[0])
    finished = datetime.fromisoformat(first["created_at"])
    prefix = target.prefix.strip("/")
    name = f"dt={finished:%Y-%m-%d}/hour={finished:%H}/{hashlib.sha256(body).hexdigest()[:32]}.jsonl"
    return f"{prefix}/{name}" if prefix else name


@lru_cache(maxsize=1)
def _session() -> botocore.session.Session:
    """One botocore session per process: it caches the loaded service models, so a client costs little."""
    return botocore.session.get_session()


def client_for(target: SinkTarget):
    config = Config(
        connect_timeout=target.timeout,
        read_timeout=target.timeout,
        retries={"max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": "path"} if target.url else {},
    )
    return _session().create_client(
        "s3",
        endpoint_url=target.url or None,
        region_name=target.region or "us-east-1",
        aws_access_key_id=target.access_id or None,
        aws_secret_access_key=target.secret or None,
        config=config,
    )


def send(target: SinkTarget, records: list[bytes], pool: urllib3.PoolManager) -> str:
    body = b"\n".join(records) + b"\n"
    try:
        client_for(target).put_object(
            Bucket=target.bucket,
            Key=object_key(target, records, body),
            Body=body,
            ContentType="application/x-ndjson",
        )
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise DeliveryError(f"S3 {error.get('Code', 'error')}: {error.get('Message', '')}") from None
    except BotoCoreError as exc:
        raise DeliveryError(f"S3 {type(exc).__name__}: {exc}") from None
    return ""
