"""Tamper evidence for the audit trail: a MAC on every event, and a sealed chain over all of them.

Two layers, so that the write path never takes a global lock:

1. **Every event carries its own MAC**, computed by the application when the event is built:
   HMAC-SHA256, keyed from settings (`AUDIT_HMAC_KEY`, else derived from `SECRET_KEY`), over a
   canonical serialisation of every field that says what happened. Writers compute it in Python and
   insert as before: concurrent writers do not wait for each other, and nothing can deadlock on it.
   A row edited or inserted with SQL, without the key, has a MAC that does not match.
2. **A sealer chains the events in order** (`seal_pending`, a beat task every few seconds, and the
   first step of `manage.py audit_verify`). Under one advisory lock it takes the events not sealed
   yet, in id order, checks each event's MAC (a forged one is refused and reported, never sealed)
   and appends one `AuditSeal` row per event: a sequence number and the chained MAC
   HMAC(key, previous chained MAC | seq | event id | event MAC). Seals are append-only like events.

Verification walks the seals in sequence and pinpoints, per kind: an event whose content changed
(its MAC no longer matches), an event deleted (its seal points at nothing), an event inserted behind
the application's back (no valid MAC, never sealed), events reordered or renumbered (the seal's
event MAC differs from the event's), and seals edited, deleted or reordered (the chain breaks or the
sequence has a gap). Signed checkpoints (`manage.py audit_checkpoint`) record the head outside the
database, so even a superuser who rewrites events, seals and MACs from scratch would need the key.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

GENESIS = "0" * 64
SEAL_LOCK = 0x6175_6469  # pg advisory lock id of the sealer ("audi")
BATCH = 5_000


def key() -> bytes:
    return _key(getattr(settings, "AUDIT_HMAC_KEY", ""), settings.SECRET_KEY)


@functools.lru_cache(maxsize=4)
def _key(configured: str, secret_key: str) -> bytes:
    # Cached per (setting, SECRET_KEY) pair: a changed setting (tests override it) is a new entry.
    if configured:
        return configured.encode()
    return hmac.digest(secret_key.encode(), b"audit-chain-v1", "sha256")


def _ip(value: Any) -> str:
    if not value:
        return ""
    if isinstance(value, str) and ":" not in value:
        return value  # IPv4 has one spelling; only IPv6 needs normalising (and parsing)
    try:
        return ipaddress.ip_address(str(value)).compressed
    except ValueError:
        return str(value)


def _at(value: dt.datetime) -> str:
    # The same text as strftime("%Y-%m-%dT%H:%M:%S.%fZ") in UTC, at a quarter of the cost.
    if value.utcoffset() != _ZERO:
        value = value.astimezone(dt.UTC)
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


_ZERO = dt.timedelta(0)


FIELDS = (
    "occurred_at",
    "actor_id",
    "actor_username",
    "source",
    "ip_address",
    "user_agent",
    "request_id",
    "action",
    "outcome",
    "target_type",
    "target_id",
    "target_repr",
    "changes",
    "reason",
    "metadata",
)


# Built once: json.dumps() with options builds a new encoder per call, a third of the cost here.
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str).encode
_DECODE = json.JSONDecoder().decode
_CHANGES, _OCCURRED_AT, _IP, _METADATA = (FIELDS.index(f) for f in ("changes", "occurred_at", "ip_address", "metadata"))


def canonical(row: dict[str, Any]) -> bytes:
    """The bytes an event's MAC covers: its fields, normalised as the database returns them."""
    return canonical_values([row.get(f) for f in FIELDS])


def canonical_values(values: list[Any]) -> bytes:
    """:func:`canonical` of the values in FIELDS order (a list this function may change)."""
    for i in (_CHANGES, _METADATA):  # raw cursors return jsonb as text (Django's setting)
        if isinstance(values[i], str):
            values[i] = {} if values[i] == "{}" else _DECODE(values[i])
    values[_OCCURRED_AT] = _at(values[_OCCURRED_AT])
    values[_IP] = _ip(values[_IP])
    return _ENCODE(values).encode()


def event_mac(row: dict[str, Any], secret: bytes | None = None) -> str:
    return hmac.digest(secret or key(), canonical(row), "sha256").hex()


def row_of(event: Any) -> dict[str, Any]:
    return {f: getattr(event, f) for f in FIELDS}


def chain_mac(previous: str, seq: int, event_id: int, mac: str, secret: bytes | None = None) -> str:
    message = f"{previous}|{seq}|{event_id}|{mac}".encode()
    return hmac.digest(secret or key(), message, "sha256").hex()


# --- sealing ------------------------------------------------------------------------------------


@dataclass
class SealResult:
    sealed: int = 0
    refused: list[int] = field(default_factory=list)  # event ids whose MAC is not the application's


def _head(cur: Any) -> tuple[int, str]:
    cur.execute("SELECT seq, chain_mac FROM audit_auditseal ORDER BY seq DESC LIMIT 1")
    row = cur.fetchone()
    return (int(row[0]), row[1]) if row else (0, GENESIS)


# FIELDS as SQL (static text: checked against FIELDS below).
COLUMNS = (
    "e.occurred_at, e.actor_id, e.actor_username, e.source, e.ip_address, e.user_agent, e.request_id, "
    "e.action, e.outcome, e.target_type, e.target_id, e.target_repr, e.changes, e.reason, e.metadata"
)
assert [c.strip().removeprefix("e.") for c in COLUMNS.split(",")] == list(FIELDS)

# S608: these queries are built from static text only (COLUMNS), never from input.
SELECT_UNSEALED = (
    "SELECT e.id, "  # noqa: S608  # nosec B608
    + COLUMNS
    + """, e.mac
    FROM audit_auditevent e
    WHERE e.id > %s AND NOT EXISTS (SELECT 1 FROM audit_auditseal s WHERE s.event_id = e.id)
    ORDER BY e.id LIMIT %s"""
)


LATE_WINDOW = 50_000


def seal_pending(limit: int = 100_000, *, full: bool = False) -> SealResult:
    """Chain every committed event that is not sealed yet. One sealer at a time (advisory lock);
    another caller returns at once with nothing done.

    The periodic run looks back LATE_WINDOW ids below the newest sealed event (a transaction that
    committed late holds an older id); `full=True` (audit_verify) looks at the whole table."""
    result = SealResult()
    secret = key()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_xact_lock(%s)", [SEAL_LOCK])
        if not cur.fetchone()[0]:
            return result
        seq, previous = _head(cur)
        after = 0
        if not full:
            cur.execute("SELECT coalesce(max(event_id), 0) FROM audit_auditseal")
            after = max(0, int(cur.fetchone()[0]) - LATE_WINDOW)
        while result.sealed + len(result.refused) < limit:
            cur.execute(SELECT_UNSEALED, [after, BATCH])
            rows = cur.fetchall()
            if not rows:
                break
            seals = []
            for row in rows:
                event_id, values, mac = row[0], dict(zip(FIELDS, row[1:-1], strict=True)), row[-1]
                after = event_id
                if not mac or not hmac.compare_digest(mac, event_mac(values, secret)):
                    result.refused.append(event_id)
                    continue
                seq += 1
                previous = chain_mac(previous, seq, event_id, mac, secret)
                seals.append((seq, event_id, mac, previous))
            if seals:
                from psycopg2.extras import execute_values

                execute_values(
                    cur.cursor,
                    "INSERT INTO audit_auditseal (seq, event_id, event_mac, chain_mac, sealed_at) VALUES %s",
                    seals,
                    template="(%s, %s, %s, %s, now())",
                    page_size=1_000,
                )
                result.sealed += len(seals)
    return result


# --- verification -------------------------------------------------------------------------------


@dataclass
class Problem:
    kind: str  # modified | deleted | forged | reordered | chain_broken | gap | unsealed
    seq: int | None
    event_id: int | None
    message: str


@dataclass
class VerifyResult:
    checked: int = 0
    head_seq: int = 0
    head_mac: str = GENESIS
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def first_by_kind(self) -> list[Problem]:
        seen: dict[str, Problem] = {}
        for p in self.problems:
            seen.setdefault(p.kind, p)
        return list(seen.values())


WALK = (
    "SELECT s.seq, s.event_id, s.event_mac, s.chain_mac, e.id, "  # noqa: S608  # nosec B608
    + COLUMNS
    + """, e.mac
    FROM audit_auditseal s LEFT JOIN audit_auditevent e ON e.id = s.event_id
    WHERE s.seq >= %s ORDER BY s.seq"""
)
UNSEALED = (
    "SELECT e.id, e.mac, e.occurred_at, "  # noqa: S608  # nosec B608
    + COLUMNS
    + """ FROM audit_auditevent e
    WHERE NOT EXISTS (SELECT 1 FROM audit_auditseal s WHERE s.event_id = e.id)
    ORDER BY e.id LIMIT 1000"""
)


def _walk(since: int) -> Iterator[tuple[Any, ...]]:
    with transaction.atomic(), connection.cursor() as cur:
        raw = cur.cursor
        raw.execute("DECLARE audit_walk NO SCROLL CURSOR FOR " + WALK, [since])
        while True:
            raw.execute("FETCH FORWARD 10000 FROM audit_walk")
            rows = raw.fetchall()
            if not rows:
                break
            yield from rows
        raw.execute("CLOSE audit_walk")


def verify(*, since: int = 1, start_mac: str | None = None, unsealed_grace: dt.timedelta | None = None) -> VerifyResult:
    """Check the sealed chain from `since` (1, or a checkpoint's seq + 1 with its MAC as
    `start_mac`), every sealed event against its MAC, and events left unsealed."""
    secret = key()
    result = VerifyResult()
    if since == 1 and start_mac is None:
        archived = last_archive()
        if archived is not None:  # older events live in the archive file: start at its checkpoint
            if not hmac.compare_digest(
                archived.signature, archive_signature(archived.upto_seq, archived.chain_mac, archived.sha256)
            ):
                result.problems.append(
                    Problem(
                        "chain_broken", archived.upto_seq, None, "the archive checkpoint's signature does not match"
                    )
                )
                return result
            since, start_mac = archived.upto_seq + 1, archived.chain_mac
    if since > 1 and start_mac is None:
        with connection.cursor() as cur:
            cur.execute("SELECT chain_mac FROM audit_auditseal WHERE seq = %s", [since - 1])
            row = cur.fetchone()
            start_mac = row[0] if row else None
        if start_mac is None:
            result.problems.append(Problem("gap", since - 1, None, f"seal {since - 1} (before --since) is missing"))
            return result
    previous = start_mac or GENESIS
    expected = since
    for row in _walk(since):
        seq, event_id, sealed_mac, chained, found_id = row[0], row[1], row[2], row[3], row[4]
        values, mac = list(row[5:-1]), row[-1]
        result.checked += 1
        if seq != expected:
            result.problems.append(
                Problem("gap", expected, None, f"seals {expected}..{seq - 1} are missing (deleted seals)")
            )
        link = hmac.digest(secret, f"{previous}|{seq}|{event_id}|{sealed_mac}".encode(), "sha256").hex()
        if not hmac.compare_digest(chained, link):  # chain_mac(), inlined: this loop runs per event
            result.problems.append(
                Problem("chain_broken", seq, event_id, f"seal {seq}: chained MAC does not follow seal {seq - 1}")
            )
        if found_id is None:
            result.problems.append(Problem("deleted", seq, event_id, f"seal {seq}: event #{event_id} was deleted"))
        elif not hmac.compare_digest(mac or "", hmac.digest(secret, canonical_values(values), "sha256").hex()):
            result.problems.append(
                Problem("modified", seq, event_id, f"seal {seq}: event #{event_id} was changed after it was written")
            )
        elif mac != sealed_mac:
            result.problems.append(
                Problem(
                    "reordered",
                    seq,
                    event_id,
                    f"seal {seq}: event #{event_id} is not the event sealed under that id (moved or renumbered)",
                )
            )
        previous, expected = chained, seq + 1
    result.head_seq, result.head_mac = expected - 1, previous
    grace = unsealed_grace if unsealed_grace is not None else dt.timedelta(minutes=5)
    with connection.cursor() as cur:
        cur.execute(UNSEALED)
        for row in cur.fetchall():
            event_id, mac, occurred = row[0], row[1], row[2]
            unsealed = dict(zip(FIELDS, row[3:], strict=True))
            if not mac or not hmac.compare_digest(mac, event_mac(unsealed, secret)):
                result.problems.append(
                    Problem("forged", None, event_id, f"event #{event_id} has no valid MAC (written behind the portal)")
                )
            elif occurred < timezone.now() - grace:
                result.problems.append(
                    Problem("unsealed", None, event_id, f"event #{event_id} is older than {grace} and still unsealed")
                )
    return result


# --- checkpoints --------------------------------------------------------------------------------


def checkpoint(result: VerifyResult) -> dict[str, Any]:
    """A signed statement of the head, to keep outside the database (a ticket, a WORM bucket)."""
    body = {"seq": result.head_seq, "chain_mac": result.head_mac, "at": _at(timezone.now())}
    message = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    body["signature"] = base64.b64encode(hmac.new(key(), message, hashlib.sha256).digest()).decode()
    return body


def checkpoint_valid(doc: dict[str, Any]) -> bool:
    body = {k: doc.get(k) for k in ("seq", "chain_mac", "at")}
    message = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    expected = base64.b64encode(hmac.new(key(), message, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(str(doc.get("signature", "")), expected)


def verify_and_record(
    *, since: int = 1, start_mac: str | None = None, seal_first: bool = True
) -> tuple[Any, VerifyResult, SealResult]:
    """Seal what is pending (the whole table), verify, and keep the run's outcome for the admin.
    Used by the periodic task and by `manage.py audit_verify`."""
    from .models import AuditVerification

    started = timezone.now()
    sealed = seal_pending(full=True) if seal_first else SealResult()
    result = verify(since=since, start_mac=start_mac)
    run = AuditVerification.objects.create(
        started_at=started,
        finished_at=timezone.now(),
        ok=result.ok,
        checked=result.checked,
        head_seq=result.head_seq,
        head_mac=result.head_mac,
        problems=[p.__dict__ for p in result.first_by_kind()],
        sealed=sealed.sealed,
    )
    return run, result, sealed


# --- retention ----------------------------------------------------------------------------------


def archive_signature(upto_seq: int, mac: str, sha256: str) -> str:
    return hmac.new(key(), f"archive|{upto_seq}|{mac}|{sha256}".encode(), hashlib.sha256).hexdigest()


def last_archive() -> Any:
    from .models import AuditArchive

    return AuditArchive.objects.order_by("-upto_seq").first()


def archive(*, older_than: dt.datetime, folder: Any) -> Any:
    """Move sealed events older than `older_than` to a compressed JSON-lines file in `folder`, record
    a signed checkpoint (AuditArchive) of the last one, and remove them from the database.

    Only a verified, contiguous run of seals from the previous archive is moved; the file is written
    and fsynced before the rows go, in one transaction with the checkpoint and its audit event.
    Returns the AuditArchive, or None when nothing is old enough."""
    import gzip
    import os
    from pathlib import Path

    from . import services as audit
    from .models import AuditArchive

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
    result = verify(since=since, start_mac=previous.chain_mac if previous else None)
    broken = [p for p in result.problems if p.seq is not None and p.seq <= upto]
    if broken:
        raise ValueError(f"the trail is not intact before seal {upto}: {broken[0].message}; nothing archived")
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"audit-{since:012d}-{upto:012d}.jsonl.gz"
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
    with transaction.atomic(), connection.cursor() as cur:
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
            file_name=path.name,
            sha256=sha,
            signature=archive_signature(upto, last_mac, sha),
        )
        audit.record(
            action="audit.archived",
            actor=None,
            target=made,
            metadata={"from_seq": since, "upto_seq": upto, "events": count, "file": path.name, "sha256": sha},
        )
    return made
