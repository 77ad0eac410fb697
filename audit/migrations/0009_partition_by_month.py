"""The audit events table becomes a table partitioned by month on `occurred_at` (audit/partitions.py).

On an existing installation the table is converted in the migration's transaction, with writers
waiting on its lock: the old table is renamed aside, the partitioned table created with the same
columns (its identity sequence continues from the old one's value), one partition per month that
has events, the current month and the next AUDIT_PARTITIONS_AHEAD, and a default partition; every
row is copied as it is (same id, same values: the MACs cover both, so verification passes as
before), then the indexes are built, the append-only triggers put back on the table and on every
partition, and the old table dropped. Time: docs/deploy.md (measured per million events).

The primary key becomes (id, occurred_at): PostgreSQL requires the partition key in a partitioned
table's unique indexes. Django keeps `id` as the primary key; the sequence keeps ids unique.
Reversible: backwards, the same copy into an unpartitioned table.
"""

import datetime as dt

from django.db import migrations, models

TABLE = "audit_auditevent"
OLD = "audit_auditevent_unpartitioned"

# Every index the table had (Django's names, so later migrations find them), created after the copy.
INDEXES = {
    "audit_actor_time_idx": "(actor_id, occurred_at DESC)",
    "audit_auditevent_action_2131bb77": "(action)",
    "audit_auditevent_action_2131bb77_like": "(action varchar_pattern_ops)",
    "audit_auditevent_actor_id_270bb4b7": "(actor_id)",
    "audit_auditevent_occurred_at_1f007848": "(occurred_at)",
    "audit_auditevent_outcome_91fd01fc": "(outcome)",
    "audit_auditevent_outcome_91fd01fc_like": "(outcome varchar_pattern_ops)",
    "audit_auditevent_request_id_b6fdcfa6": "(request_id)",
    "audit_auditevent_request_id_b6fdcfa6_like": "(request_id varchar_pattern_ops)",
    "audit_target_idx": "(target_type, target_id)",
}

TRIGGERS = """
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_event_append_only();
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_truncate();
"""


def _set_aside(cur) -> tuple[int, bool]:  # type: ignore[no-untyped-def]
    """Rename the table and its sequence aside, free the index names; the sequence's state."""
    cur.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
    cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", [TABLE])
    sequence = cur.fetchone()[0]
    cur.execute(f"ALTER SEQUENCE {sequence} RENAME TO {OLD}_id_seq")  # also blocks nextval() until commit
    cur.execute(f"SELECT last_value, is_called FROM {OLD}_id_seq")  # noqa: S608
    state = cur.fetchone()
    cur.execute(f"ALTER TABLE {TABLE} RENAME TO {OLD}")
    cur.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype IN ('p', 'u')", [OLD]
    )
    for (name,) in cur.fetchall():
        cur.execute(f'ALTER TABLE {OLD} DROP CONSTRAINT "{name}"')
    cur.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", [OLD])
    for (name,) in cur.fetchall():
        cur.execute(f'DROP INDEX "{name}"')
    return int(state[0]), bool(state[1])


def _finish(cur, state: tuple[int, bool]) -> None:  # type: ignore[no-untyped-def]
    for name, columns in INDEXES.items():
        cur.execute(f'CREATE INDEX "{name}" ON {TABLE} {columns}')
    cur.execute(TRIGGERS)
    cur.execute(f"DROP TABLE {OLD}")
    cur.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, %s)", [TABLE, state[0], state[1]])


def partition(apps, schema_editor):  # type: ignore[no-untyped-def]
    from audit import partitions

    with schema_editor.connection.cursor() as cur:
        state = _set_aside(cur)
        cur.execute(
            f"CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING STORAGE)"
            " PARTITION BY RANGE (occurred_at)"
        )
        cur.execute(f"CREATE TABLE {partitions.DEFAULT} PARTITION OF {TABLE} DEFAULT")
        partitions.protect(cur, partitions.DEFAULT)
        cur.execute(f"SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date FROM {OLD}")  # noqa: S608
        wanted = {row[0] for row in cur.fetchall()}
        month = partitions.month_of(dt.datetime.now(dt.UTC))
        for _ in range(partitions.ahead() + 1):
            wanted.add(month)
            month = partitions.next_month(month)
        for month in sorted(wanted):
            partitions.create_month(cur, month)
        cur.execute(f"INSERT INTO {TABLE} SELECT * FROM {OLD}")  # noqa: S608 - the same columns, in order
        cur.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (id, occurred_at)")
        _finish(cur, state)


def unpartition(apps, schema_editor):  # type: ignore[no-untyped-def]
    with schema_editor.connection.cursor() as cur:
        cur.execute("DROP INDEX IF EXISTS audit_actor_name_time_idx")
        state = _set_aside(cur)
        cur.execute(f"CREATE TABLE {TABLE} (LIKE {OLD} INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING STORAGE)")
        cur.execute(f"INSERT INTO {TABLE} SELECT * FROM {OLD}")  # noqa: S608
        cur.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_pkey PRIMARY KEY (id)")
        _finish(cur, state)


class Migration(migrations.Migration):
    dependencies = [("audit", "0008_refuse_truncate")]

    operations = [
        migrations.RunPython(partition, unpartition),
        # The API's search by actor (its username) over a time window, newest first.
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["actor_username", "-occurred_at"], name="audit_actor_name_time_idx"),
        ),
    ]
