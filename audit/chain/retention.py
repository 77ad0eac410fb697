"""Retention: moving old sealed events to a signed, verified archive file."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction

from .. import partitions
from . import archive_store
from .mac import FIELDS, GENESIS, _at, archive_signature
from .sealing import last_archive, seal_pending
from .verification import _walk, verify

if TYPE_CHECKING:
    pass

# --- retention ----------------------------------------------------------------------------------


def archive(*, older_than: dt.datetime, folder: Any = None) -> Any:
    """Move sealed events older than `older_than` to a compressed JSON-lines file in `folder` (None:
    the S3 bucket with Object Lock of AUDIT_ARCHIVE_S3_BUCKET, audit/chain/archive_store.py), record
    a signed checkpoint (AuditArchive) of the last one, and remove them from the database.

    Only a verified trail is archived (the whole trail, against the witnesses' anchors); the file
    is written and fsynced before the rows go, in one transaction with the checkpoint and its audit
    event. Returns the AuditArchive, or None when nothing is old enough."""
    import gzip
    import os

    from .. import anchors as anchoring
    from .. import services as audit
    from ..models import AuditArchive

    seal_pending(full=True)
    previous = last_archive()
    since = previous.upto_seq + 1 if previous else 1
    with connection.cursor() as cur:
        cur.execute(
            """SELECT coalesce(min(s.seq), (SELECT max(seq) + 1 FROM audit_auditseal)) - 1
               FROM audit_auditseal s JOIN audit_auditevent e ON e.id = s.event_id
               WHERE s.seq >= %s AND e.occurred_at >= %s""",
            [since, older_than],
        )
        row = cur.fetchone()
    upto = int(row[0]) if row and row[0] is not None else since - 1
    if upto < since:
        return None
    found, errors = anchoring.read_latest()
    if errors:
        raise ValueError(f"{errors[0]}; nothing archived")
    result = verify(anchors=found)
    # What would be moved must be intact and agree with the anchors; an unsealed or forged event
    # (never sealed, so never archived) does not stop retention.
    broken = [p for p in result.problems if (p.seq is not None and p.seq <= upto) or p.kind in ("anchor", "archived")]
    if broken:
        raise ValueError(f"the trail is not intact before seal {upto}: {broken[0].message}; nothing archived")
    store = archive_store.store_for(folder)
    file_name = f"audit-{since:012d}-{upto:012d}.jsonl.gz"
    path = store.stage(file_name)
    digest = hashlib.sha256()
    count, last_mac = 0, previous.chain_mac if previous else GENESIS
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb") as out:
        for row in _walk(since):
            if row[0] > upto:
                break
            values = dict(zip(FIELDS, row[5:-1], strict=True))
            values = {**values, "occurred_at": _at(values["occurred_at"])}
            for name in ("changes", "metadata"):
                if isinstance(values.get(name), str):
                    values[name] = json.loads(values[name])
            line = json.dumps(
                {"seq": row[0], "event_id": row[1], "event_mac": row[2], "chain_mac": row[3], "event": values},
                sort_keys=True,
                default=str,
            ).encode()
            out.write(line + b"\n")
            count += 1
            last_mac = row[3]
        out.flush()
        raw.flush()
        os.fsync(raw.fileno())
    digest.update(path.read_bytes())
    sha = digest.hexdigest()
    checkpoint = archive_store.checkpoint_document(
        name=file_name, since=since, upto=upto, events=count, chain_mac=last_mac, sha256=sha
    )
    location = store.put(file_name, path, sha256=sha, checkpoint=checkpoint)
    with transaction.atomic(), connection.cursor() as cur:
        # Whole months first: a partition whose every event is in this archive is detached and
        # dropped (no row-by-row delete); the rest of the range is deleted row by row.
        dropped = _drop_months(cur, _droppable_months(cur, since, upto, older_than))
        cur.execute("SET LOCAL audit.archiving = 'on'")
        cur.execute(
            "DELETE FROM audit_auditevent WHERE id IN "
            "(SELECT event_id FROM audit_auditseal WHERE seq BETWEEN %s AND %s)",
            [since, upto],
        )
        cur.execute("DELETE FROM audit_auditseal WHERE seq BETWEEN %s AND %s", [since, upto])
        cur.execute("SET LOCAL audit.archiving = 'off'")
        made = AuditArchive.objects.create(
            upto_seq=upto,
            chain_mac=last_mac,
            events=count,
            file_name=file_name,
            location=location,
            sha256=sha,
            signature=archive_signature(upto, last_mac, sha),
        )
        audit.record(
            action="audit.archived",
            actor=None,
            target=made,
            metadata={
                "from_seq": since,
                "upto_seq": upto,
                "events": count,
                "file": file_name,
                "sha256": sha,
                "location": location,
            },
        )
        for name, events in dropped:
            audit.record(
                action="audit.partition_dropped",
                actor=None,
                target_type="audit partition",
                target_id=name,
                target_repr=name.removeprefix(f"{partitions.TABLE}_p"),
                metadata={"events": events, "archive": file_name, "upto_seq": upto, "sha256": sha},
            )
    return made


def _drop_months(cur: Any, months: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Detach and drop each month; the ones whose lock did not come within LOCK_TIMEOUT (DETACH
    waits for every reader of the events table, an export included, and would hold every writer
    behind it) are left to the row-by-row delete that follows, and dropped empty next time."""
    from django.db import OperationalError

    cur.execute("SELECT current_setting('lock_timeout')")
    saved = cur.fetchone()[0]
    cur.execute("SELECT set_config('lock_timeout', %s, true)", [partitions.LOCK_TIMEOUT])
    done = []
    for name, count in months:
        try:
            with transaction.atomic():  # a savepoint: a lock timeout undoes this month only
                cur.execute(f"ALTER TABLE {partitions.TABLE} DETACH PARTITION {name}")
                cur.execute(f"DROP TABLE {name}")
        except OperationalError as exc:
            if getattr(exc.__cause__, "pgcode", None) != partitions.LOCK_NOT_AVAILABLE:
                raise
            continue
        done.append((name, count))
    cur.execute("SELECT set_config('lock_timeout', %s, true)", [saved])
    return done


def _droppable_months(cur: Any, since: int, upto: int, older_than: dt.datetime) -> list[tuple[str, int]]:
    """The monthly partitions wholly older than `older_than` whose every event is sealed within
    seals since..upto (the ones this archive holds), with their number of events. A month with one
    event outside (unsealed, forged, sealed later) is kept, and its archived events deleted."""
    found = []
    for month, name in partitions.months().items():
        if partitions.bounds(month)[1] > older_than:
            continue
        cur.execute(
            f"SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM audit_auditseal s"  # noqa: S608  # nosec B608
            f" WHERE s.event_id = e.id AND s.seq BETWEEN %s AND %s)) FROM {name} e",
            [since, upto],
        )
        events, outside = cur.fetchone()
        if not outside:
            found.append((name, int(events)))
    return found
