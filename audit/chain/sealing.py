"""The head of the chain and the sealer: chaining committed events in order, never over a history."""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.utils import timezone

from .mac import (
    BATCH,
    COLUMNS,
    FIELDS,
    GENESIS,
    SEAL_LOCK,
    _at,
    archive_signature,
    chain_mac,
    event_mac,
    key,
    max_delay,
)

if TYPE_CHECKING:
    from ..anchors import Anchor

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
    from .. import anchors

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


SEAL_THROUGH_WAIT = 10.0  # seconds seal_through waits for a running sealer


def seal_through(event_id: int, *, timeout: float = SEAL_THROUGH_WAIT) -> SealResult:
    """Chain every committed event that is not sealed yet, so that the chain covers `event_id` (an
    event the caller committed and wants a checkpoint to include, e.g. a campaign's close).

    Where `seal_pending` gives up at once when the periodic sealer holds the lock (its next run
    comes in seconds), this waits for it, up to `timeout` seconds, then seals under the lock itself.
    Raises ValueError saying why when the event is still not sealed: the lock was held too long,
    the chain cannot be continued (`blocked`), the event's MAC is not the application's, it is
    older than the head allows, or there is no such committed event. What it sealed of other
    events stays sealed (the periodic sealer would seal them all the same)."""
    history = genesis_evidence()  # before the transaction: it may read a witness over the network
    with transaction.atomic():
        _wait_for_the_sealer(timeout, outcome="nothing was sealed")
        result = _seal_locked(limit=10**9, full=False, history=history, accept=())
    with connection.cursor() as cur:
        cur.execute("SELECT 1 FROM audit_auditseal WHERE event_id = %s", [event_id])
        if cur.fetchone() is not None:
            return result
    if result.blocked:
        why = result.blocked
    elif event_id in result.refused:
        why = "its MAC is not the application's"
    elif event_id in result.late:
        why = "it is older than the chain's head allows (an operator accepts it: audit_accept_unsealed)"
    else:
        why = "no committed event has that id, or a first chain waits for its witnesses (try again)"
    raise ValueError(f"the audit chain could not be sealed through event #{event_id}: {why}")


def _seal_locked(*, limit: int, full: bool, history: History | None, accept: Collection[int]) -> SealResult:
    result = SealResult()
    secret = key()
    accepted = set(accept)
    with connection.cursor() as cur:
        # The periodic sealer gives up at once when another one runs (it comes back in seconds).
        # An operator's acceptance took the lock already, waiting (_wait_for_the_sealer): taking
        # it again in the same session succeeds.
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


ACCEPT_LOCK_WAIT = 10.0  # seconds an operator's acceptance waits for a running sealer


def unsealed_events_accept(
    *, actor: Any, reason: str, event_ids: Sequence[int] | None = None, lock_wait: float = ACCEPT_LOCK_WAIT
) -> SealResult:
    """An operator's decision to seal events the sealer left alone (older than the head allowed,
    or a first chain over old events): recorded as `audit.unsealed_accepted` with the ids and the
    reason, in the same transaction as their seals. Never over an anchor: a witness that anchored
    a chain the database no longer holds means the chain must be restored, not restarted.

    Nothing is recorded as accepted unless it was sealed in the same transaction. The periodic
    sealer holds the sealer's lock for a moment every few seconds: this waits for it (up to
    `lock_wait` seconds, then raises ValueError saying so), where the periodic run would give up at
    once, and chooses the events under the lock, so that what it names is what it seals."""
    from .. import services as audit

    if not reason.strip():
        raise ValueError("a reason is required")
    history = genesis_evidence()  # before the transaction: it may read a witness over the network
    with transaction.atomic():
        _wait_for_the_sealer(lock_wait)
        candidates = unsealed_candidates()
        chosen = list(candidates if event_ids is None else event_ids)
        unknown = sorted(set(chosen) - set(candidates))
        if unknown:
            raise ValueError(f"event #{unknown[0]} is not an unsealed event with a valid MAC")
        if not chosen:
            return SealResult()
        audit.record(
            action="audit.unsealed_accepted",
            actor=actor,
            reason=reason,
            metadata={"events": len(chosen), "event_ids": chosen[:1000], "first": min(chosen), "last": max(chosen)},
        )
        result = _seal_locked(limit=10**9, full=True, history=history, accept=chosen)
        if result.blocked:
            raise ValueError(result.blocked)
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM audit_auditseal WHERE event_id = ANY(%s)", [chosen])
            sealed = int(cur.fetchone()[0])
        if sealed != len(chosen):
            # The sealer stopped short (the witnesses were read before a first chain appeared or
            # went): raising rolls the acceptance back with the seals, so nothing says otherwise.
            raise ValueError(
                f"only {sealed} of the {len(chosen)} accepted events could be sealed; nothing was accepted, try again"
            )
    return result


def _wait_for_the_sealer(seconds: float, *, outcome: str = "nothing was accepted") -> None:
    """Take the sealer's advisory lock for this transaction, waiting up to `seconds` for a sealer
    that holds it. `_seal_locked` then takes it again at once (advisory locks are re-entrant
    within a session; both are released at commit or rollback)."""
    from django.db import OperationalError

    with connection.cursor() as cur:
        cur.execute("SHOW lock_timeout")
        before = cur.fetchone()[0]
        cur.execute("SELECT set_config('lock_timeout', %s, true)", [f"{max(1, int(seconds * 1000))}ms"])
        try:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [SEAL_LOCK])
        except OperationalError as exc:  # lock_not_available: the transaction is aborted, raise out of it
            raise ValueError(
                f"the audit sealer has held its lock for more than {seconds:g} s (a long sealing run, or a session "
                f"holding advisory lock {SEAL_LOCK}, see pg_locks): {outcome}; try again"
            ) from exc
        cur.execute("SELECT set_config('lock_timeout', %s, true)", [before])


def last_archive() -> Any:
    from ..models import AuditArchive

    return AuditArchive.objects.order_by("-upto_seq").first()


# S608: static text only (COLUMNS), never input.
UNSEALED_ALL = (
    "SELECT e.id, e.mac, "  # noqa: S608  # nosec B608
    + COLUMNS
    + """ FROM audit_auditevent e
    WHERE NOT EXISTS (SELECT 1 FROM audit_auditseal s WHERE s.event_id = e.id)
    ORDER BY e.id"""
)
