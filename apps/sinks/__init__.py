"""Log sinks: every ledger row of a tenant, also delivered to the tenant's own HTTP endpoint, Langfuse or S3.

Path of one record, never on the /v1 request path:
  ``spend_ingest_events`` commits new ledger rows -> ``SPEND_INGESTED_HOOKS`` calls
  ``dispatch.sinks_enqueue(rows)`` in the ingesting worker -> each enabled sink whose organization (and
  team, for a team's sink) matches the row gets the redacted record (records.py) pushed on its own
  bounded Redis list (queue.py: full means dropped and counted, never grown) -> Celery ``sinks.deliver``
  every 2 s (beat) sends each sink's next batch through its transport (transports/: signed HTTP JSON,
  Langfuse's ingestion API, JSONL objects in S3), retrying a failed batch with exponential backoff and
  jitter and dropping it (counted) after ``SINKS_MAX_ATTEMPTS``. Each sink's last success, last error,
  delivered and dropped counts are on its row (the admin shows them).

Delivery is at most once per ledger row: the ledger's UNIQUE request id means a replayed outbox batch
adds no rows, so nothing is enqueued twice; a worker killed between the ledger commit and the enqueue
loses that batch for the sinks (the ledger still has it).
"""
