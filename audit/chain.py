"""Tamper evidence for the audit trail: a MAC on every event, a sealed chain over all of them, and
the chain's head anchored outside the database (audit/anchors.py).

Three layers, so that the write path never takes a global lock and the database alone is never the
only witness of itself:

1. **Every event carries its own MAC**, computed by the application before the insert:
   HMAC-SHA256, keyed from settings (`AUDIT_HMAC_KEY`, else derived from `SECRET_KEY`; never in the
   database), over the event's **id** (its position, drawn from the table's sequence first) and a
   canonical serialisation of every field that says what happened. Writers do not wait for each
   other. A row edited or inserted with SQL, without the key, has a MAC that does not match; an
   exact copy of a genuine event under another id does not match either.
2. **A sealer chains the events in order** (`seal_pending`, a beat task every few seconds, and the
   first step of `audit_verify`). Under one advisory lock it takes the events not sealed yet, in id
   order, checks each event's MAC (a forged one is refused and reported, never sealed) and appends
   one `AuditSeal` row per event: a sequence number and the chained MAC
   HMAC(key, previous chained MAC | seq | event id | event MAC). It continues from the newest seal,
   or from the last archive's signed checkpoint when no seal is newer; it never starts a new chain
   from genesis over a history (an anchor in a witness, or events older than could have gone
   unsealed), and it never seals an event that was already old when the head was sealed (its seal
   was removed, or it was slipped in later): those wait for an operator (`audit_accept_unsealed`).
3. **Anchors**: the signed head (seq, chained MAC) is written every few tens of seconds to the SIEM
   stream and to witnesses outside the database (an append-only file, an S3 bucket with Object
   Lock). Verification checks the database against the newest anchor of every witness.

Verification always walks the whole trail, from genesis or the last archive's checkpoint, and
pinpoints, per kind: an event whose content changed (`modified`), an event deleted (`deleted`), an
event inserted or copied behind the application's back (`forged`), events renumbered (`reordered`),
seals edited, deleted or reordered (`chain_broken`, `gap`), seals left below an archive
(`archived`), events never sealed (`unsealed`), and a database that no longer holds what a witness
anchored (`anchor`: the anchored seal missing or different, the head below it) or a witness that
cannot be read (`witness`).

MAC format 2 (migration audit/0007): the canonical JSON list is the event id followed by the
fields. Format 1 (the 15 fields alone) is kept only to migrate and to check checkpoints taken
before it (`legacy_event_mac`).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

if TYPE_CHECKING:
    from .anchors import Anchor

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


def max_delay() -> dt.timedelta:
    """How long a transaction may hold an event between building it and committing it. An event
    that was already older than this when the chain's head was sealed is not sealed automatically."""
    return dt.timedelta(seconds=getattr(settings, "AUDIT_SEAL_MAX_DELAY_SECONDS", 900))


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


def _normalise(values: list[Any]) -> list[Any]:
    """The values in FIELDS order as the database returns them, normalised in place."""
    for i in (_CHANGES, _METADATA):  # raw cursors return jsonb as text (Django's setting)
        if isinstance(values[i], str):
            values[i] = {} if values[i] == "{}" else _DECODE(values[i])
    values[_OCCURRED_AT] = _at(values[_OCCURRED_AT])
    values[_IP] = _ip(values[_IP])
    return values


def canonical(row: dict[str, Any], event_id: int) -> bytes:
    """The bytes an event's MAC covers: its id, then its fields, normalised as the database returns them."""
    return canonical_values([row.get(f) for f in FIELDS], event_id)


def canonical_values(values: list[Any], event_id: int) -> bytes:
    """:func:`canonical` of the values in FIELDS order (a list this function may change)."""
    values = _normalise(values)
    values.insert(0, int(event_id))  # format 2: 16 elements, the position first
    return _ENCODE(values).encode()


def event_mac(row: dict[str, Any], event_id: int, secret: bytes | None = None) -> str:
    return hmac.digest(secret or key(), canonical(row, event_id), "sha256").hex()


def legacy_event_mac(row: dict[str, Any], secret: bytes | None = None) -> str:
    """Format 1 (before migration audit/0007): the fields without the id. For migrating the trail
    and for checking checkpoints taken before; nothing new is ever MACed this way."""
    values = _normalise([row.get(f) for f in FIELDS])
    return hmac.digest(secret or key(), _ENCODE(values).encode(), "sha256").hex()


def row_of(event: Any) -> dict[str, Any]:
    return {f: getattr(event, f) for f in FIELDS}


def chain_mac(previous: str, seq: int, event_id: int, mac: str, secret: bytes | None = None) -> str:
    message = f"{previous}|{seq}|{event_id}|{mac}".encode()
    return hmac.digest(secret or key(), message, "sha256").hex()


# --- the head -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """Where the chain goes on from: the newest seal, or the last archive's checkpoint when no
    seal is newer, or genesis (seq 0) when there is neither."""

    seq: int
    chain_mac: str
    at: dt.datetime | None  # when it was sealed or archived; None at genesis
    archive: bool = False


def _archive_row(cur: Any) -> tuple[Any, ...] | None:
    cur.execute(
        "SELECT upto_seq, chain_mac, sha256, signature, archived_at FROM audit_auditarchive "
        "ORDER BY upto_seq DESC LIMIT 1"
    )
    row = cur.fetchone()
    return tuple(row) if row else None


def _head_of(cur: Any) -> tuple[Head | None, str]:
    """The head, or None and why there is none to trust (a forged archive checkpoint)."""
    cur.execute("SELECT seq, chain_mac, sealed_at FROM audit_auditseal ORDER BY seq DESC LIMIT 1")
    sealed = cur.fetchone()
    archived = _archive_row(cur)
    if archived is not None and (sealed is None or sealed[0] <= archived[0]):
        upto, mac, sha, signature, at = archived
        if not hmac.compare_digest(signature, archive_signature(upto, mac, sha)):
            return None, f"the last archive's checkpoint (seal {upto}) is not signed with the audit key"
        return Head(int(upto), mac, at, archive=True), ""
    if sealed is not None:
        return Head(int(sealed[0]), sealed[1], sealed[2]), ""
    return Head(0, GENESIS, None), ""


def head() -> Head:
    with connection.cursor() as cur:
        found, broken = _head_of(cur)
    if found is None:
        raise ValueError(broken)
    return found


# --- sealing ------------------------------------------------------------------------------------


@dataclass
class SealResult:
    sealed: int = 0
    refused: list[int] = field(default_factory=list)  # event ids whose MAC is not the application's
    late: list[int] = field(default_factory=list)  # valid MAC, but already old when the head was sealed
    blocked: str = ""  # why nothing could be sealed at all


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


@dataclass(frozen=True)
class History:
    """What the witnesses hold, read (outside any transaction) when there is no chain in the
    database to continue: the evidence that decides whether a chain may start from genesis."""

    anchors: list[Anchor]
    errors: list[str]


def genesis_evidence() -> History | None:
    """Read the witnesses when the database holds events but no seal and no archive (a first run,
    or seals that were removed); None when there is a chain to continue or nothing to seal."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM audit_auditseal) AND NOT EXISTS (SELECT 1 FROM audit_auditarchive)"
            " AND EXISTS (SELECT 1 FROM audit_auditevent)"
        )
        if not cur.fetchone()[0]:
            return None
    from . import anchors

    found, errors = anchors.read_latest()
    return History(found, errors)


def seal_pending(limit: int = 100_000, *, full: bool = False) -> SealResult:
    """Chain every committed event that is not sealed yet. One sealer at a time (advisory lock);
    another caller returns at once with nothing done.

    The periodic run looks back LATE_WINDOW ids below the newest sealed event (a transaction that
    committed late holds an older id); `full=True` (audit_verify) looks at the whole table."""
    history = genesis_evidence()  # before the transaction: it may read a witness over the network
    with transaction.atomic():
        return _seal_locked(limit=limit, full=full, history=history, accept=())


def _seal_locked(*, limit: int, full: bool, history: History | None, accept: Collection[int]) -> SealResult:
    result = SealResult()
    secret = key()
    accepted = set(accept)
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_xact_lock(%s)", [SEAL_LOCK])
        if not cur.fetchone()[0]:
            return result
        start, broken = _head_of(cur)
        if start is None:
            result.blocked = broken
            return result
        seq, previous = start.seq, start.chain_mac
        oldest: dt.datetime | None = None
        if start.at is None:  # genesis
            if history is None:
                return result  # events arrived after the witnesses were looked at: next run
            result.blocked = _genesis_refused(cur, history, accepted)
            if result.blocked:
                return result
        else:
            # Events that were already older than the transaction bound when the head was sealed
            # should have been sealed by then: their seal was removed, or they were slipped in.
            # Measured from the head's own sealing, not the clock: an outage of the beat, however
            # long, leaves the head as old as the outage and raises no alarm.
            oldest = start.at - max_delay()
        after = 0
        if not full:
            cur.execute("SELECT coalesce(max(event_id), 0) FROM audit_auditseal")
            after = max(0, int(cur.fetchone()[0]) - LATE_WINDOW)
        while result.sealed + len(result.refused) + len(result.late) < limit:
            cur.execute(SELECT_UNSEALED, [after, BATCH])
            rows = cur.fetchall()
            if not rows:
                break
            seals = []
            for row in rows:
                event_id, values, mac = row[0], dict(zip(FIELDS, row[1:-1], strict=True)), row[-1]
                after = event_id
                if not mac or not hmac.compare_digest(mac, event_mac(values, event_id, secret)):
                    result.refused.append(event_id)
                    continue
                if oldest is not None and values["occurred_at"] < oldest and event_id not in accepted:
                    result.late.append(event_id)
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


def _genesis_refused(cur: Any, history: History, accepted: set[int]) -> str:
    """Why a new chain must not start from genesis here, or "" when nothing says there was one."""
    nothing = "there is no seal and no archive to continue from"
    if history.errors:
        return f"{nothing} and {history.errors[0]}: no new chain is started without the witnesses"
    anchored = [a for a in history.anchors if a.seq > 0]
    if anchored:
        top = max(anchored, key=lambda a: a.seq)
        return (
            f"{nothing}, but {top.where} anchored seal {top.seq} at {top.at}: the seals were removed. "
            "A new chain would hide it; restore the events and seals from a backup"
        )
    cur.execute(
        "SELECT id, occurred_at FROM audit_auditevent WHERE occurred_at < %s AND NOT (id = ANY(%s))"
        " ORDER BY occurred_at LIMIT 1",
        [timezone.now() - max_delay(), list(accepted)],
    )
    old = cur.fetchone()
    if old is not None:
        return (
            f"{nothing}, but event #{old[0]} is from {_at(old[1])}, older than AUDIT_SEAL_MAX_DELAY_SECONDS "
            "allows for an event never sealed: the trail had a chain that is gone, or sealing never ran. "
            "Check, then accept the events with manage.py audit_accept_unsealed"
        )
    return ""


def unsealed_candidates() -> list[int]:
    """Events with a valid MAC that are not sealed: what an operator may accept."""
    secret = key()
    out: list[int] = []
    with connection.cursor() as cur:
        cur.execute(UNSEALED_ALL)
        for row in cur.fetchall():
            event_id, mac = row[0], row[1]
            if mac and hmac.compare_digest(mac, event_mac(dict(zip(FIELDS, row[2:], strict=True)), event_id, secret)):
                out.append(event_id)
    return out


def unsealed_events_accept(*, actor: Any, reason: str, event_ids: Sequence[int] | None = None) -> SealResult:
    """An operator's decision to seal events the sealer left alone (older than the head allowed,
    or a first chain over old events): recorded as `audit.unsealed_accepted` with the ids and the
    reason, in the same transaction as their seals. Never over an anchor: a witness that anchored
    a chain the database no longer holds means the chain must be restored, not restarted."""
    from . import services as audit

    if not reason.strip():
        raise ValueError("a reason is required")
    candidates = unsealed_candidates()
    chosen = list(candidates if event_ids is None else event_ids)
    unknown = sorted(set(chosen) - set(candidates))
    if unknown:
        raise ValueError(f"event #{unknown[0]} is not an unsealed event with a valid MAC")
    if not chosen:
        return SealResult()
    history = genesis_evidence()
    with transaction.atomic():
        audit.record(
            action="audit.unsealed_accepted",
            actor=actor,
            reason=reason,
            metadata={"events": len(chosen), "event_ids": chosen[:1000], "first": min(chosen), "last": max(chosen)},
        )
        result = _seal_locked(limit=10**9, full=True, history=history, accept=chosen)
        if result.blocked:
            raise ValueError(result.blocked)
    return result


# --- verification -------------------------------------------------------------------------------


@dataclass
class Problem:
    kind: str  # modified | deleted | forged | reordered | chain_broken | gap | archived | unsealed | anchor | witness
    seq: int | None
    event_id: int | None
    message: str


@dataclass
class VerifyResult:
    checked: int = 0
    head_seq: int = 0
    head_mac: str = GENESIS
    start_seq: int = 0  # the archive checkpoint the walk started after (0: genesis)
    anchors: int = 0  # anchors checked
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
UNSEALED_ALL = (
    "SELECT e.id, e.mac, "  # noqa: S608  # nosec B608
    + COLUMNS
    + """ FROM audit_auditevent e
    WHERE NOT EXISTS (SELECT 1 FROM audit_auditseal s WHERE s.event_id = e.id)
    ORDER BY e.id"""
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


def verify(*, anchors: Sequence[Anchor] = (), unsealed_grace: dt.timedelta | None = None) -> VerifyResult:
    """Check the whole trail: the sealed chain from genesis or the last archive's signed checkpoint,
    every sealed event against its MAC, events left unsealed, and the chain against `anchors` (the
    newest anchor of each witness, a checkpoint): each anchored seal must be there with the anchored
    chained MAC, which proves that nothing up to it changed, and the head must not be below it."""
    secret = key()
    result = VerifyResult()
    since, previous = 1, GENESIS
    archived = last_archive()
    if archived is not None:  # older events live in the archive file: start at its checkpoint
        if not hmac.compare_digest(
            archived.signature, archive_signature(archived.upto_seq, archived.chain_mac, archived.sha256)
        ):
            result.problems.append(
                Problem("chain_broken", archived.upto_seq, None, "the archive checkpoint's signature does not match")
            )
            return result
        since, previous = archived.upto_seq + 1, archived.chain_mac
        with connection.cursor() as cur:
            cur.execute("SELECT count(*), min(seq), max(seq) FROM audit_auditseal WHERE seq < %s", [since])
            count, low, high = cur.fetchone()
        if count:
            result.problems.append(
                Problem(
                    "archived",
                    low,
                    None,
                    f"seals {low}..{high} are at or below the archive checkpoint (seal {archived.upto_seq}): "
                    "archived seals were put back, or a chain was started over",
                )
            )
    result.start_seq = since - 1
    wanted = {a.seq for a in anchors if a.seq >= since}
    anchored_macs: dict[int, str] = {}
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
        elif not hmac.compare_digest(
            mac or "", hmac.digest(secret, canonical_values(values, found_id), "sha256").hex()
        ):
            result.problems.append(
                Problem(
                    "modified",
                    seq,
                    event_id,
                    f"seal {seq}: event #{event_id} was changed after it was written (its content or its id)",
                )
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
        if seq in wanted:
            anchored_macs[seq] = chained
        previous, expected = chained, seq + 1
    result.head_seq, result.head_mac = expected - 1, previous
    for anchor in anchors:
        result.anchors += 1
        problem = _against_anchor(anchor, result, archived, anchored_macs)
        if problem is not None:
            result.problems.append(problem)
    # Five minutes, or less when the sealer's bound is shorter: whatever the sealer will not seal
    # on its own must show here.
    grace = unsealed_grace if unsealed_grace is not None else min(dt.timedelta(minutes=5), max_delay())
    with connection.cursor() as cur:
        cur.execute(UNSEALED)
        for row in cur.fetchall():
            event_id, mac, occurred = row[0], row[1], row[2]
            unsealed = dict(zip(FIELDS, row[3:], strict=True))
            if not mac or not hmac.compare_digest(mac, event_mac(unsealed, event_id, secret)):
                result.problems.append(
                    Problem(
                        "forged",
                        None,
                        event_id,
                        f"event #{event_id} has no valid MAC (written behind the portal, or a copy of another event)",
                    )
                )
            elif occurred < timezone.now() - grace:
                result.problems.append(
                    Problem(
                        "unsealed",
                        None,
                        event_id,
                        f"event #{event_id} is older than {grace} and still unsealed (its seal was removed, it was "
                        "slipped in late, or sealing is not running; see audit_accept_unsealed)",
                    )
                )
    return result


def _against_anchor(anchor: Anchor, result: VerifyResult, archived: Any, macs: dict[int, str]) -> Problem | None:
    said = f"{anchor.where} anchored seal {anchor.seq} at {anchor.at}"
    if anchor.format == 1:
        return _against_legacy_checkpoint(anchor, result, said)
    if anchor.seq <= result.start_seq:
        # Archived: the signed archive checkpoint stands for it; only its own seal can be compared.
        if archived is not None and anchor.seq == archived.upto_seq and anchor.chain_mac != archived.chain_mac:
            return Problem("anchor", anchor.seq, None, f"anchor: {said}, but the archive checkpoint differs from it")
        return None
    if result.head_seq < anchor.seq:
        return Problem(
            "anchor",
            anchor.seq,
            None,
            f"anchor: the head is seal {result.head_seq}, below seal {anchor.seq} that {anchor.where} anchored at "
            f"{anchor.at}: seals {result.head_seq + 1}..{anchor.seq} and their events were removed",
        )
    if anchor.seq not in macs:
        return Problem("anchor", anchor.seq, None, f"anchor: {said}, and that seal is missing")
    if not hmac.compare_digest(macs[anchor.seq], anchor.chain_mac):
        return Problem(
            "anchor",
            anchor.seq,
            None,
            f"anchor: {said} with another chained MAC: the trail up to it was rewritten",
        )
    return None


def _against_legacy_checkpoint(anchor: Anchor, result: VerifyResult, said: str) -> Problem | None:
    """A checkpoint taken before format 2 holds a format-1 chained MAC: recompute that chain over
    the events as they are now (their format-1 MACs) from the walk's start up to its seal."""
    if anchor.seq <= result.start_seq:
        return None  # archived since; the signed archive checkpoint stands for it
    if result.head_seq < anchor.seq:
        return Problem("anchor", anchor.seq, None, f"anchor: the head is seal {result.head_seq}, below what {said}")
    secret = key()
    previous = GENESIS
    if result.start_seq:
        archived = last_archive()
        previous = archived.chain_mac if archived is not None else GENESIS
    for row in _walk(result.start_seq + 1):
        seq, event_id = row[0], row[1]
        if seq > anchor.seq:
            break
        mac = hmac.digest(secret, _ENCODE(_normalise(list(row[5:-1]))).encode(), "sha256").hex() if row[4] else ""
        previous = chain_mac(previous, seq, event_id, mac, secret)
        if seq == anchor.seq:
            if hmac.compare_digest(previous, anchor.chain_mac):
                return None
            break
    return Problem("anchor", anchor.seq, None, f"anchor: {said} (format 1), and the trail up to it differs")


# --- checkpoints --------------------------------------------------------------------------------


def checkpoint(result: VerifyResult) -> dict[str, Any]:
    """A signed statement of the head, to keep outside the database (a ticket, a WORM bucket): the
    same document the anchor witnesses hold (audit/anchors.py)."""
    from . import anchors

    return anchors.document(result.head_seq, result.head_mac)


def checkpoint_valid(doc: dict[str, Any]) -> bool:
    from . import anchors

    return anchors.parse(doc, where="checkpoint") is not None


def legacy_checkpoint_signature(doc: dict[str, Any]) -> str:
    """The signature of a checkpoint printed before format 2 ({seq, chain_mac, at, signature})."""
    body = {k: doc.get(k) for k in ("seq", "chain_mac", "at")}
    message = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return base64.b64encode(hmac.new(key(), message, hashlib.sha256).digest()).decode()


def verify_and_record(
    *, checkpoint: Anchor | None = None, seal_first: bool = True
) -> tuple[Any, VerifyResult, SealResult]:
    """Seal what is pending (the whole table), read the newest anchor of every witness, verify the
    whole trail against them (and `checkpoint`), and keep the run's outcome for the admin. Used by
    the periodic task and by `manage.py audit_verify`. A witness that cannot be read fails the run:
    the trail cannot be proved complete without it."""
    from . import anchors as anchoring
    from .models import AuditVerification

    started = timezone.now()
    sealed = seal_pending(full=True) if seal_first else SealResult()
    found, errors = anchoring.read_latest()  # outside any transaction: witnesses are on the network
    if checkpoint is not None:
        found.append(checkpoint)
    result = verify(anchors=found)
    result.problems.extend(Problem("witness", None, None, error) for error in errors)
    if sealed.blocked:  # first: it explains the unsealed events that follow
        result.problems.insert(0, Problem("unsealed", None, None, f"sealing stopped: {sealed.blocked}"))
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

    Only a verified trail is archived (the whole trail, against the witnesses' anchors); the file
    is written and fsynced before the rows go, in one transaction with the checkpoint and its audit
    event. Returns the AuditArchive, or None when nothing is old enough."""
    import gzip
    import os
    from pathlib import Path

    from . import anchors as anchoring
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
    found, errors = anchoring.read_latest()
    if errors:
        raise ValueError(f"{errors[0]}; nothing archived")
    result = verify(anchors=found)
    # What would be moved must be intact and agree with the anchors; an unsealed or forged event
    # (never sealed, so never archived) does not stop retention.
    broken = [p for p in result.problems if (p.seq is not None and p.seq <= upto) or p.kind in ("anchor", "archived")]
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
