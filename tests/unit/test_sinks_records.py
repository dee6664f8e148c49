"""What a sink receives for one ledger row: the columns, no secret, metadata only when capture is on;
the HTTP signature a receiver can verify; the Langfuse events of a record."""

from __future__ import annotations

import hashlib
import hmac
import uuid

import orjson

from apps.sinks.records import record_json
from apps.sinks.redaction import REDACTED, redact
from apps.sinks.transports import DeliveryError
from apps.sinks.transports.http import body_of, signature
from apps.sinks.transports.langfuse import events_of
from apps.spend.rows import ledger_row
from tests.factories import SpendEventFactory

GATEWAY_KEY = "sk-gw-" + "a1b2c3d4" * 6
PROVIDER_KEY = "sk-proj-" + "Z9y8X7w6" * 5


def sink_record(ledger_row, capture_bodies: bool = False) -> dict:
    """The record as a sink receives it: the JSON text, parsed."""
    return orjson.loads(record_json(ledger_row, capture_bodies=capture_bodies))


def row(**overrides):
    event = SpendEventFactory(request_id="req-1", organization_id=1, team_id=2, key_id=3, **overrides)
    return ledger_row(event, uuid.uuid4())


def test_a_record_carries_the_ledger_columns_and_not_the_metadata_by_default():
    record = sink_record(row(model="gpt-4o-mini", prompt_tokens=7, completion_tokens=3, cost="0.0012"))
    assert record["request_id"] == "req-1"
    assert (record["organization_id"], record["team_id"], record["key_id"]) == (1, 2, 3)
    assert (record["model"], record["prompt_tokens"], record["completion_tokens"]) == ("gpt-4o-mini", 7, 3)
    assert record["cost"] == "0.0012000000"  # exact, as the ledger stores it
    assert "metadata" not in record and "ingest_batch" not in record
    assert record["created_at"].endswith("+00:00")  # RFC 3339, UTC


def test_capture_adds_the_metadata_with_every_secret_redacted():
    metadata = {
        "attempts": [{"deployment_id": 4, "status": 500, "error": f"upstream said Bearer {PROVIDER_KEY}"}],
        "api_key": "anything at all",
        "headers": {"Authorization": "Basic dXNlcjpwYXNz", "X-Api-Key": "k", "accept": "json"},
        "note": f"the key {GATEWAY_KEY} leaked into a note",
        "aws": "AKIAIOSFODNN7EXAMPLE",
    }
    record = sink_record(row(metadata=metadata), capture_bodies=True)
    text = record_json(row(metadata=metadata), capture_bodies=True).decode()
    for secret in (GATEWAY_KEY, PROVIDER_KEY, "anything at all", "dXNlcjpwYXNz", "AKIAIOSFODNN7EXAMPLE"):
        assert secret not in text
    captured = record["metadata"]
    assert captured["api_key"] == REDACTED
    assert captured["headers"] == {"Authorization": REDACTED, "X-Api-Key": REDACTED, "accept": "json"}
    assert captured["attempts"][0]["status"] == 500 and REDACTED in captured["attempts"][0]["error"]


def test_a_key_alias_that_is_really_a_key_is_redacted_but_ordinary_names_stay():
    assert sink_record(row(key_alias=GATEWAY_KEY))["key_alias"] == REDACTED
    assert sink_record(row(key_alias="billing-service"))["key_alias"] == "billing-service"
    # Names are whole words: a key's alias or a token count is not a secret.
    assert redact({"key_alias": "x", "prompt_tokens": 5, "token": "t"}) == {
        "key_alias": "x",
        "prompt_tokens": 5,
        "token": REDACTED,
    }


def test_delivery_errors_never_carry_a_secret():
    assert GATEWAY_KEY not in str(DeliveryError(f"refused Authorization: Bearer {GATEWAY_KEY}"))


def test_the_signature_is_what_the_documented_receiver_computes():
    records = [record_json(row())]
    body = body_of(records)
    assert orjson.loads(body)["records"][0]["request_id"] == "req-1"
    expected = hmac.new(b"shared-secret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("shared-secret", "1700000000", body) == f"sha256={expected}"
    assert signature("shared-secret", "1700000001", body) != f"sha256={expected}"  # the timestamp is signed


def test_a_record_becomes_a_langfuse_trace_and_its_generation():
    record = sink_record(row(model="gpt-4o-mini", prompt_tokens=7, completion_tokens=3, cost="0.5", status=200))
    trace, generation = events_of(record)
    assert trace["type"] == "trace-create" and generation["type"] == "generation-create"
    assert trace["body"]["id"] == "req-1" == generation["body"]["traceId"]
    assert generation["body"]["usageDetails"]["input"] == 7 and generation["body"]["usageDetails"]["output"] == 3
    assert generation["body"]["costDetails"] == {"total": 0.5}
    assert generation["body"]["model"] == "gpt-4o-mini" and generation["body"]["level"] == "DEFAULT"
    # Event ids are stable: a retried batch is deduplicated by Langfuse.
    again = events_of(record)
    assert [e["id"] for e in again] == [trace["id"], generation["id"]]
