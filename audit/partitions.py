"""The audit events table is partitioned by month on `occurred_at` (migration audit/0009).

Each month is a partition named `audit_auditevent_pYYYYMM` holding [first of the month, first of the
next) in UTC; `audit_auditevent_default` takes any event whose month has no partition, so an insert
never fails for want of one. Beat runs :func:`ensure_months` daily: the current month and the next
AUDIT_PARTITIONS_AHEAD exist before their first event. Retention (audit.chain.retention) drops a
month's partition once every event in it is archived.

The database keeps the trail append-only on every partition: the row trigger of the parent (UPDATE,
DELETE) is cloned by PostgreSQL onto each partition, including those created later; TRUNCATE is a
statement trigger, which PostgreSQL does not clone, so :func:`protect` adds it to each partition.

The primary key is (id, occurred_at): PostgreSQL requires the partition key in every unique index.
Django keeps `id` as the model's primary key; ids still come from the one table-wide sequence, so no
two events share an id whatever their month (the sequence, not the index, is what makes ids unique).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

TABLE = "audit_auditevent"
DEFAULT = f"{TABLE}_default"
LOCK_TIMEOUT = "5s"  # the longest partition maintenance waits for a lock on the events table
LOCK_NOT_AVAILABLE = "55P03"
_MONTHLY = re.compile(rf"^{TABLE}_p(\d{{4}})(\d{{2}})$")

# TRUNCATE refused on one partition (the parent's statement trigger does not reach it).
PROTECT = """CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_truncate()"""


def month_of(value: dt.datetime | dt.date) -> dt.date:
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC).date()
    return value.replace(day=1)


def next_month(month: dt.date) -> dt.date:
    return (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def name_of(month: dt.date) -> str:
    return f"{TABLE}_p{month:%Y%m}"


def bounds(month: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)
    end_month = next_month(month)
    return start, dt.datetime(end_month.year, end_month.month, 1, tzinfo=dt.UTC)


def ahead() -> int:
    return int(getattr(settings, "AUDIT_PARTITIONS_AHEAD", 3))


def months() -> dict[dt.date, str]:
    """The monthly partitions that exist: {first of the month: table name}."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        names = [row[0] for row in cur.fetchall()]
    found = {}
    for name in names:
        match = _MONTHLY.match(name)
        if match:
            found[dt.date(int(match[1]), int(match[2]), 1)] = name
    return dict(sorted(found.items()))


def protect(cur: Any, table: str) -> None:
    cur.execute(PROTECT.format(table=connection.ops.quote_name(table)))


def create_month(cur: Any, month: dt.date) -> str:
    """Create the partition of `month` (in the caller's transaction). Events of that month already
    in the default partition are moved into it: the default is detached for the move (the parent's
    lock keeps writers waiting, not failing) and attached again."""
    name, (start, end) = name_of(month), bounds(month)
    quoted = connection.ops.quote_name(name)
    cur.execute(f"SELECT EXISTS (SELECT 1 FROM {DEFAULT} WHERE occurred_at >= %s AND occurred_at < %s)", [start, end])  # noqa: S608  # nosec B608
    stray = cur.fetchone()[0]
    if stray:
        cur.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        cur.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {DEFAULT}")
        cur.execute(f"CREATE TABLE {quoted} PARTITION OF {TABLE} FOR VALUES FROM (%s) TO (%s)", [start, end])
        protect(cur, name)
    else:
        # Created apart, then attached: ATTACH takes a lock on the events table that lets reads and
        # writes go on (CREATE ... PARTITION OF would wait for every reader, an export included,
        # and stop every writer behind it). PostgreSQL builds its indexes and clones the row trigger.
        cur.execute(f"CREATE TABLE {quoted} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING STORAGE)")
        protect(cur, name)
        cur.execute(f"ALTER TABLE {TABLE} ATTACH PARTITION {quoted} FOR VALUES FROM (%s) TO (%s)", [start, end])
    if stray:
        # The detached default has no row trigger (PostgreSQL drops the cloned ones on DETACH and
        # clones them again on ATTACH): the rows are copied exactly, then removed from it.
        cur.execute(
            f"INSERT INTO {quoted} SELECT * FROM {DEFAULT} WHERE occurred_at >= %s AND occurred_at < %s",  # noqa: S608  # nosec B608
            [start, end],
        )
        cur.execute(f"DELETE FROM {DEFAULT} WHERE occurred_at >= %s AND occurred_at < %s", [start, end])  # noqa: S608  # nosec B608
        cur.execute(f"ALTER TABLE {TABLE} ATTACH PARTITION {DEFAULT} DEFAULT")
    return name


@dataclass
class Ensured:
    created: list[str] = field(default_factory=list)
    moved_from_default: int = 0
    waited: list[str] = field(default_factory=list)  # months not created: a lock was held too long


def ensure_months(*, today: dt.date | None = None, count: int | None = None) -> Ensured:
    """The partitions of the current month and the next `count` (AUDIT_PARTITIONS_AHEAD), created
    when missing; idempotent, and safe to run concurrently (an advisory lock serialises it). Each
    creation is an `audit.partition_created` event in its transaction."""
    first = month_of(today or timezone.now())
    wanted = [first]
    for _ in range(ahead() if count is None else count):
        wanted.append(next_month(wanted[-1]))
    result = Ensured()
    for month in wanted:
        try:
            made = _ensure_month(month)
        except OperationalError as exc:
            if getattr(exc.__cause__, "pgcode", None) != LOCK_NOT_AVAILABLE:
                raise
            result.waited.append(f"{month:%Y-%m}")  # a long reader held the lock: the next run
            continue
        if made is not None:
            result.created.append(made[0])
            result.moved_from_default += made[1]
    return result


def _ensure_month(month: dt.date) -> tuple[str, int] | None:
    from . import services as audit

    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
        # Never queue for long behind a reader (an export holds its lock for minutes): whoever
        # came after would queue behind this. The month is created ahead; the next run tries again.
        cur.execute("SELECT set_config('lock_timeout', %s, true)", [LOCK_TIMEOUT])
        if month in months():
            return None
        start, end = bounds(month)
        cur.execute(f"SELECT count(*) FROM {DEFAULT} WHERE occurred_at >= %s AND occurred_at < %s", [start, end])  # noqa: S608  # nosec B608
        moved = int(cur.fetchone()[0])
        name = create_month(cur, month)
        audit.record(
            action="audit.partition_created",
            actor=None,
            target_type="audit partition",
            target_id=name,
            target_repr=f"{month:%Y-%m}",
            metadata={"from": start.isoformat(), "to": end.isoformat(), "moved_from_default": moved},
        )
    return name, moved


def missing_ahead(*, today: dt.date | None = None) -> list[str]:
    """Months among the current and the next AUDIT_PARTITIONS_AHEAD without their partition (their
    events would land in the default partition): what posture reports."""
    month, found, missing = month_of(today or timezone.now()), months(), []
    for _ in range(ahead() + 1):
        if month not in found:
            missing.append(f"{month:%Y-%m}")
        month = next_month(month)
    return missing


_LOCK = 0x6175_7074  # pg advisory lock id of partition maintenance ("aupt")
