"""The audit events table partitioned by month (migration audit/0009, audit/partitions.py): an existing
table is converted without one row changing, partitions are created ahead (and events stranded in the
default partition moved to theirs), every partition refuses hand-editing, and retention drops a month
only when every event in it is archived, with verification unchanged."""

from __future__ import annotations

import datetime as dt
import gzip
import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import time_machine
from django.apps import apps
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit import chain, partitions, tasks
from audit import services as audit
from audit.models import AuditEvent
from tests.audit.trail import events, verify_cli
from tests.db import admin_connection

pytestmark = pytest.mark.django_db(transaction=True)

MIGRATION = importlib.import_module("audit.migrations.0009_partition_by_month")
# Every column, in id order, as text: what "not one row changed" means.
ROWS = "SELECT md5(string_agg(e::text, ',' ORDER BY e.id)), count(*) FROM audit_auditevent e"


@pytest.fixture(autouse=True)
def sealed_in_any_order(settings: Any) -> None:
    """The tests write events months apart under time travel; the seals' own time is the database's
    clock, so every past event would look late to the sealer (AUDIT_SEAL_MAX_DELAY_SECONDS)."""
    settings.AUDIT_SEAL_MAX_DELAY_SECONDS = 20 * 366 * 86400


@pytest.fixture(autouse=True)
def standard_partitions() -> Iterator[None]:
    """Partitions are DDL: a test's extra months outlive its rows. Put back the migration's set."""
    yield
    conn = admin_connection(connection.settings_dict["NAME"])
    try:
        with conn.cursor() as cur:
            cur.execute("SET session_replication_role = replica")
            month, keep = partitions.month_of(timezone.now()), set()
            for _ in range(partitions.ahead() + 1):
                keep.add(partitions.name_of(month))
                month = partitions.next_month(month)
            cur.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'audit_auditevent'::regclass"
            )
            for (name,) in cur.fetchall():
                if name not in keep and name != partitions.DEFAULT:
                    cur.execute(f"DROP TABLE {name}")
    finally:
        conn.close()
    with transaction.atomic(), connection.cursor() as cur:
        for month in [partitions.month_of(timezone.now())]:
            for _ in range(partitions.ahead() + 1):
                if month not in partitions.months():
                    partitions.create_month(cur, month)
                month = partitions.next_month(month)


def rows() -> tuple[str, int]:
    with connection.cursor() as cur:
        cur.execute(ROWS)
        found = cur.fetchone()
    return found[0], found[1]


def where(event_id: int) -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT tableoid::regclass::text FROM audit_auditevent WHERE id = %s", [event_id])
        return str(cur.fetchone()[0])


def relkind() -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT relkind FROM pg_class WHERE relname = 'audit_auditevent'")
        return str(cur.fetchone()[0])


def run(step: Any) -> None:
    with transaction.atomic():
        step(apps, SimpleNamespace(connection=connection))


def months_ago(n: int, day: int) -> dt.datetime:
    month = partitions.month_of(timezone.now())
    for _ in range(n):
        month = (month - dt.timedelta(days=1)).replace(day=1)
    return dt.datetime(month.year, month.month, day, 12, tzinfo=dt.UTC)


def test_an_existing_table_is_converted_without_one_row_changing_and_still_verifies() -> None:
    with time_machine.travel(months_ago(5, 10)):
        events(3)
    with time_machine.travel(months_ago(2, 28)):
        events(2)
    recent = events(2)
    run(MIGRATION.unpartition)  # the table as it was before 0009, with these events in it
    assert relkind() == "r"
    before = rows()
    assert verify_cli()[0] == 0

    run(MIGRATION.partition)
    assert relkind() == "p"
    assert rows() == before  # same ids, same values: the MACs still cover them
    code, out, err = verify_cli()
    assert code == 0 and "audit trail intact: 7 sealed events checked from genesis" in out, err
    # One partition per month with events, the current one and the next ones, and the default.
    assert where(recent[0].pk) == partitions.name_of(partitions.month_of(timezone.now()))
    assert {partitions.month_of(months_ago(5, 10)), partitions.month_of(months_ago(2, 28))} <= set(partitions.months())
    # The sequence continues where it was; the portal writes on as before.
    later = audit.record(action="test.after", actor=None)
    assert later.pk > recent[-1].pk
    assert chain.seal_pending(full=True).sealed == 1 and verify_cli()[0] == 0


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE {table} SET reason = 'edited'",
        "DELETE FROM {table}",
        "TRUNCATE {table}",
    ],
)
def test_every_partition_refuses_hand_editing_including_those_created_later(sql: str) -> None:
    future = partitions.next_month(partitions.next_month(partitions.month_of(timezone.now())))
    for _ in range(partitions.ahead()):
        future = partitions.next_month(future)  # beyond what the migration made
    events(1)
    assert partitions.ensure_months(today=future, count=0).created == [partitions.name_of(future)]
    with time_machine.travel(dt.datetime(future.year, future.month, 3, tzinfo=dt.UTC)):
        audit.record(action="test.future", actor=None)
    with time_machine.travel(dt.datetime(1990, 1, 1, tzinfo=dt.UTC)):
        audit.record(action="test.default", actor=None)  # no partition for 1990: the default takes it
    tables = [partitions.name_of(partitions.month_of(timezone.now())), partitions.name_of(future), partitions.DEFAULT]
    before = rows()
    for table in tables:
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cur:
            cur.execute(sql.format(table=table))
    assert rows() == before and before[1] == 3 + 1  # three events and the partition's creation


def test_partitions_are_created_ahead_idempotently_and_stranded_events_moved_in() -> None:
    assert partitions.missing_ahead() == []
    later = partitions.month_of(timezone.now())
    for _ in range(partitions.ahead() + 2):
        later = partitions.next_month(later)
    # Beat did not run for months: an event of a month without its partition still goes in.
    with time_machine.travel(dt.datetime(later.year, later.month, 9, tzinfo=dt.UTC)):
        assert f"{later:%Y-%m}" in partitions.missing_ahead()
        stranded = events(2)
        assert where(stranded[0].pk) == partitions.DEFAULT
        before = rows()
        made = partitions.ensure_months()
        assert partitions.name_of(later) in made.created and made.moved_from_default == 2
        assert partitions.ensure_months().created == []  # idempotent
        assert tasks.ensure_audit_partitions() == []  # beat's task: the same service
        assert partitions.missing_ahead() == []
        assert chain.seal_pending(full=True).sealed == len(made.created)
    assert where(stranded[0].pk) == partitions.name_of(later)
    after = rows()
    assert after[1] == before[1] + len(made.created)  # one `audit.partition_created` event per partition
    created = AuditEvent.objects.get(action="audit.partition_created", target_id=partitions.name_of(later))
    assert created.metadata["moved_from_default"] == 2
    assert verify_cli()[0] == 0


def test_retention_drops_a_month_only_when_every_event_in_it_is_archived(tmp_path: Path) -> None:
    old, partial = partitions.month_of(months_ago(14, 1)), partitions.month_of(months_ago(13, 1))
    with time_machine.travel(months_ago(14, 2)):
        partitions.ensure_months(today=old, count=1)  # two `audit.partition_created` events, that month
        assert chain.seal_pending(full=True).sealed == 2
    with time_machine.travel(months_ago(14, 20)):
        whole = events(3)
    with time_machine.travel(months_ago(13, 5)):
        early = events(2)
    with time_machine.travel(months_ago(13, 25)):
        late = events(2)  # newer than the cutoff: this month is only partly archived
    events(1)
    in_old = list(AuditEvent.objects.filter(occurred_at__lt=partitions.bounds(partial)[0]).order_by("id"))
    assert len(in_old) == 5
    made = chain.archive(older_than=months_ago(13, 15), folder=tmp_path)
    assert made is not None and made.events == 7

    assert partitions.name_of(old) not in partitions.months().values()  # detached and dropped
    assert partitions.name_of(partial) in partitions.months().values()  # kept, with its later events
    assert {where(e.pk) for e in late} == {partitions.name_of(partial)}
    assert not AuditEvent.objects.filter(pk__in=[e.pk for e in in_old + early]).exists()
    assert {e.pk for e in whole} <= {e.pk for e in in_old}
    dropped = AuditEvent.objects.get(action="audit.partition_dropped")
    assert dropped.target_id == partitions.name_of(old)
    assert dropped.metadata["events"] == 5 and dropped.metadata["archive"] == made.file_name
    lines = [json.loads(x) for x in gzip.decompress((tmp_path / made.file_name).read_bytes()).splitlines()]
    assert [x["event_id"] for x in lines] == [e.pk for e in in_old + early]
    code, out, err = verify_cli()
    assert code == 0 and "checked from the archive checkpoint of seal 7" in out, err

    # The rest of the partly archived month goes the next time, and then the month does too.
    again = chain.archive(older_than=months_ago(12, 1), folder=tmp_path)
    assert again is not None and again.events == 2
    assert partitions.name_of(partial) not in partitions.months().values()
    assert verify_cli()[0] == 0


def test_a_month_with_an_event_outside_the_archive_is_kept(tmp_path: Path, superuser_sql: Any) -> None:
    old = partitions.month_of(months_ago(14, 1))
    with time_machine.travel(months_ago(14, 2)):
        partitions.ensure_months(today=old, count=0)
        assert chain.seal_pending(full=True).sealed == 1
    with time_machine.travel(months_ago(14, 20)):
        events(2)
    events(1)
    # An event slipped in behind the portal (never sealed, so never archived) in that month.
    superuser_sql(
        "INSERT INTO audit_auditevent (id, occurred_at, actor_username, source, user_agent, request_id, action,"
        " outcome, target_type, target_id, target_repr, changes, reason, metadata, mac)"
        " VALUES (nextval(pg_get_serial_sequence('audit_auditevent', 'id')), %s, '', 'system', '', 'x',"
        " 'forged', 'success', '', '', '', '{}', '', '{}', '')",
        [months_ago(14, 21)],
    )
    made = chain.archive(older_than=months_ago(13, 1), folder=tmp_path)
    assert made is not None and made.events == 3
    assert partitions.name_of(old) in partitions.months().values()
    assert AuditEvent.objects.filter(action="forged").count() == 1
    assert not AuditEvent.objects.filter(action="audit.partition_dropped").exists()


def test_partition_maintenance_gives_way_to_a_long_reader(tmp_path: Path, monkeypatch: Any) -> None:
    """An export reads for minutes; creating or dropping a month must not wait behind it (and stop
    every writer queued behind that wait): it gives up after LOCK_TIMEOUT and the next run does it."""
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "200ms")
    old = partitions.month_of(months_ago(14, 1))
    with time_machine.travel(months_ago(14, 2)):
        partitions.ensure_months(today=old, count=0)
        assert chain.seal_pending(full=True).sealed == 1
    with time_machine.travel(months_ago(14, 20)):
        archived = events(2)
    events(1)
    later = partitions.month_of(timezone.now())
    for _ in range(partitions.ahead() + 2):
        later = partitions.next_month(later)
    reader = admin_connection(connection.settings_dict["NAME"])
    reader.autocommit = False
    try:
        with reader.cursor() as cur:  # an export in progress: every partition read, the default included
            cur.execute("SELECT count(*) FROM audit_auditevent")
        made = partitions.ensure_months(today=later, count=0)
        assert made.created == [] and made.waited == [f"{later:%Y-%m}"]
        kept = chain.archive(older_than=months_ago(13, 1), folder=tmp_path)
        assert kept is not None and kept.events == 3  # archived and deleted row by row...
        assert partitions.name_of(old) in partitions.months().values()  # ...the month left for later
        assert not AuditEvent.objects.filter(pk__in=[e.pk for e in archived]).exists()
    finally:
        reader.rollback()
        reader.close()
    assert partitions.ensure_months(today=later, count=0).created == [partitions.name_of(later)]
    assert verify_cli()[0] == 0
