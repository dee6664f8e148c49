"""The ledger becomes range-partitioned by month on Postgres; UNIQUE(request_id) becomes UNIQUE(request_id, created_at).

A partitioned table's unique indexes must contain the partition key, so the unique request id alone
cannot stay. ``created_at`` comes from the event (the time the request finished), so a redelivered event
has the same value and UNIQUE(request_id, created_at) keeps ingestion idempotent (docs/spend.md).

On Postgres the existing table is converted with its rows, in this migration's one transaction: the old
table is locked against writes (reads go on), a partitioned twin is created with a partition per month
present plus the current month and a DEFAULT partition, the rows are copied, the old table is dropped and
the twin takes its name, then its indexes and constraints are recreated from the old table's definitions.
The table's PRIMARY KEY becomes (id, created_at); Django's primary key stays ``id``, now fed by a sequence
(Postgres 15 has no identity columns on partitioned tables). The code is kept here rather than imported so
the migration does what it did when written. SQLite (the embedded default) keeps a plain table.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import migrations, models

TABLE = "spend_spendlog"


def _month_add(start: datetime, months: int) -> datetime:
    index = start.year * 12 + start.month - 1 + months
    return start.replace(year=index // 12, month=index % 12 + 1)


def _definitions(cursor, table: str) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The table's plain index definitions and its (name, type, definition) constraints, PK and unique."""
    cursor.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s)) ORDER BY indexname",
        [table, table],
    )
    # A partitioned table's index prints as "ON ONLY table" (not recursing to partitions): not what we recreate.
    indexes = [row[0].replace(" ON ONLY ", " ON ", 1) for row in cursor.fetchall()]
    cursor.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = to_regclass(%s) AND contype IN ('p', 'u') ORDER BY conname",
        [table],
    )
    return indexes, list(cursor.fetchall())


def _columns(cursor, table: str) -> str:
    cursor.execute(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
        "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
        [table],
    )
    return cursor.fetchone()[0]


def _rebuild(schema_editor, *, partitioned: bool) -> None:
    """Replace the ledger table by a partitioned (or, backwards, a plain) one holding the same rows."""
    cursor = schema_editor.connection.cursor()
    cursor.execute("SELECT count(*) FROM pg_constraint WHERE confrelid = to_regclass(%s) AND contype = 'f'", [TABLE])
    if cursor.fetchone()[0]:
        raise RuntimeError(f"{TABLE} is referenced by a foreign key: it cannot be rebuilt")
    cursor.execute(f"LOCK TABLE {TABLE} IN EXCLUSIVE MODE")  # writers wait; readers go on
    indexes, constraints = _definitions(cursor, TABLE)
    columns = _columns(cursor, TABLE)
    new = f"{TABLE}_rebuilt"
    if partitioned:
        cursor.execute(
            f"CREATE TABLE {new} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY RANGE (created_at)"
        )
        cursor.execute(
            f"SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC') FROM {TABLE}"  # noqa: S608
        )
        months = {row[0].replace(tzinfo=UTC) for row in cursor.fetchall()}
        months.add(datetime.now(tz=UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0))
        for start in sorted(months):
            cursor.execute(
                f"CREATE TABLE {TABLE}_p{start:%Y_%m} PARTITION OF {new} FOR VALUES FROM (%s) TO (%s)",
                [start, _month_add(start, 1)],
            )
        cursor.execute(f"CREATE TABLE {TABLE}_default PARTITION OF {new} DEFAULT")
    else:
        cursor.execute(f"CREATE TABLE {new} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        cursor.execute(f"ALTER TABLE {new} ALTER COLUMN id DROP DEFAULT")
    cursor.execute(f"INSERT INTO {new} ({columns}) SELECT {columns} FROM {TABLE}")  # noqa: S608
    cursor.execute("SELECT coalesce(max(id), 0) FROM " + TABLE)  # noqa: S608
    last_id = cursor.fetchone()[0]
    cursor.execute(f"DROP TABLE {TABLE}")  # its identity sequence (or owned sequence) goes with it
    cursor.execute(f"ALTER TABLE {new} RENAME TO {TABLE}")
    for name, kind, definition in constraints:
        if kind == "p":
            definition = "PRIMARY KEY (id, created_at)" if partitioned else "PRIMARY KEY (id)"
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {name} {definition}")
    for definition in indexes:
        cursor.execute(definition)
    if partitioned:
        cursor.execute(f"CREATE SEQUENCE {TABLE}_id_seq OWNED BY {TABLE}.id")
        cursor.execute(f"ALTER TABLE {TABLE} ALTER COLUMN id SET DEFAULT nextval('{TABLE}_id_seq')")
    else:
        cursor.execute(f"ALTER TABLE {TABLE} ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY")
    cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, %s)", [TABLE, max(last_id, 1), last_id > 0])
    cursor.execute(f"ANALYZE {TABLE}")


def partition(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        _rebuild(schema_editor, partitioned=True)


def unpartition(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        _rebuild(schema_editor, partitioned=False)


class Migration(migrations.Migration):
    dependencies = [
        ("spend", "0003_spendlog_trace_id"),
    ]

    operations = [
        migrations.AlterField(
            model_name="spendlog",
            name="request_id",
            field=models.CharField(max_length=64),
        ),
        migrations.AddConstraint(
            model_name="spendlog",
            constraint=models.UniqueConstraint(fields=("request_id", "created_at"), name="spendlog_request_unique"),
        ),
        migrations.RunPython(partition, unpartition),
    ]
