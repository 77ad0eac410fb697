"""Verification of the whole trail against its MACs, its chain and the witnesses' anchors; checkpoints."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.utils import timezone

from .mac import (
    _ENCODE,
    COLUMNS,
    FIELDS,
    GENESIS,
    _normalise,
    archive_signature,
    canonical_values,
    chain_mac,
    event_mac,
    key,
    max_delay,
)
from .sealing import SealResult, last_archive, seal_pending

if TYPE_CHECKING:
    from ..anchors import Anchor

# --- verification -------------------------------------------------------------------------------


@dataclass
class Problem:
    # modified | deleted | forged | reordered | chain_broken | gap | archived | archive | unsealed | anchor | witness
    kind: str
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
    archives_read: int = 0  # archives read back from their store (archive_store.read_back)
    archived_checked: int = 0  # events checked in them
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def first_by_kind(self) -> list[Problem]:
        seen: dict[str, Problem] = {}
        for p in self.problems:
            seen.setdefault(p.kind, p)
        return list(seen.values())


_SEALS_WITH_EVENTS = (
    "SELECT s.seq, s.event_id, s.event_mac, s.chain_mac, e.id, "  # noqa: S608  # nosec B608
    + COLUMNS
    + """, e.mac
    FROM audit_auditseal s LEFT JOIN audit_auditevent e ON e.id = s.event_id"""
)
WALK = _SEALS_WITH_EVENTS + " WHERE s.seq >= %s ORDER BY s.seq"
SEGMENT = _SEALS_WITH_EVENTS + " WHERE s.seq >= %s AND s.seq <= %s ORDER BY s.seq"
UNSEALED = (
    "SELECT e.id, e.mac, e.occurred_at, "  # noqa: S608  # nosec B608
    + COLUMNS
    + """ FROM audit_auditevent e
    WHERE NOT EXISTS (SELECT 1 FROM audit_auditseal s WHERE s.event_id = e.id)
    ORDER BY e.id LIMIT 1000"""
)


def _walk(since: int, upto: int | None = None) -> Iterator[tuple[Any, ...]]:
    """The seals from `since` (up to `upto`, or the newest), each with its event's id, fields and MAC."""
    query, params = (WALK, [since]) if upto is None else (SEGMENT, [since, upto])
    with transaction.atomic(), connection.cursor() as cur:
        raw = cur.cursor
        raw.execute("DECLARE audit_walk NO SCROLL CURSOR FOR " + query, params)
        while True:
            raw.execute("FETCH FORWARD 10000 FROM audit_walk")
            rows = raw.fetchall()
            if not rows:
                break
            yield from rows
        raw.execute("CLOSE audit_walk")


def verify(
    *, anchors: Sequence[Anchor] = (), unsealed_grace: dt.timedelta | None = None, archives: bool = False
) -> VerifyResult:
    """Check the whole trail: the sealed chain from genesis or the last archive's signed checkpoint,
    every sealed event against its MAC, events left unsealed, and the chain against `anchors` (the
    newest anchor of each witness, a checkpoint): each anchored seal must be there with the anchored
    chained MAC, which proves that nothing up to it changed, and the head must not be below it.
    With `archives`, every archive kept in an object store is read back and its chain walked up to
    its checkpoint first (`archive` problems)."""
    secret = key()
    result = VerifyResult()
    if archives:
        from ..models import AuditArchive
        from .archive_store import read_back

        read = read_back(list(AuditArchive.objects.order_by("upto_seq")), secret)
        result.archives_read, result.archived_checked = read.archives, read.events
        result.problems.extend(Problem("archive", seq, None, message) for seq, message in read.problems)
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
    walked = _check_seals(
        _walk(since), expected=since, previous=previous, secret=secret, problems=result.problems, wanted=wanted
    )
    result.checked += walked.checked
    expected, previous, anchored_macs = walked.expected, walked.previous, walked.macs
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


@dataclass
class Walked:
    """Where a walk over seals ended: the next expected seq, the last chained MAC, how many seals
    it checked, and the chained MACs found at the seqs it was asked for."""

    expected: int
    previous: str
    checked: int
    macs: dict[int, str]


def _check_seals(
    rows: Iterable[tuple[Any, ...]],
    *,
    expected: int,
    previous: str,
    secret: bytes,
    problems: list[Problem],
    wanted: Collection[int] = (),
) -> Walked:
    """Check seals in order (rows of `_walk`) from seq `expected`, chained from `previous`: every
    seal present, every link following the one before, every event there, unchanged, and the one
    that was sealed. The whole verification and the anchor task (over the seals since an anchor)
    share it; the loop runs once per event, so the chained MAC is inlined."""
    checked = 0
    macs: dict[int, str] = {}
    for row in rows:
        seq, event_id, sealed_mac, chained, found_id = row[0], row[1], row[2], row[3], row[4]
        values, mac = list(row[5:-1]), row[-1]
        checked += 1
        if seq != expected:
            problems.append(Problem("gap", expected, None, f"seals {expected}..{seq - 1} are missing (deleted seals)"))
        link = hmac.digest(secret, f"{previous}|{seq}|{event_id}|{sealed_mac}".encode(), "sha256").hex()
        if not hmac.compare_digest(chained, link):  # chain_mac(), inlined: this loop runs per event
            problems.append(
                Problem("chain_broken", seq, event_id, f"seal {seq}: chained MAC does not follow seal {seq - 1}")
            )
        if found_id is None:
            problems.append(Problem("deleted", seq, event_id, f"seal {seq}: event #{event_id} was deleted"))
        elif not hmac.compare_digest(
            mac or "", hmac.digest(secret, canonical_values(values, found_id), "sha256").hex()
        ):
            problems.append(
                Problem(
                    "modified",
                    seq,
                    event_id,
                    f"seal {seq}: event #{event_id} was changed after it was written (its content or its id)",
                )
            )
        elif mac != sealed_mac:
            problems.append(
                Problem(
                    "reordered",
                    seq,
                    event_id,
                    f"seal {seq}: event #{event_id} is not the event sealed under that id (moved or renumbered)",
                )
            )
        if seq in wanted:
            macs[seq] = chained
        previous, expected = chained, seq + 1
    return Walked(expected, previous, checked, macs)


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
    from .. import anchors

    return anchors.document(result.head_seq, result.head_mac)


def checkpoint_valid(doc: dict[str, Any]) -> bool:
    from .. import anchors

    return anchors.parse(doc, where="checkpoint") is not None


def legacy_checkpoint_signature(doc: dict[str, Any]) -> str:
    """The signature of a checkpoint printed before format 2 ({seq, chain_mac, at, signature})."""
    body = {k: doc.get(k) for k in ("seq", "chain_mac", "at")}
    message = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return base64.b64encode(hmac.new(key(), message, hashlib.sha256).digest()).decode()


def verify_and_record(
    *, checkpoint: Anchor | None = None, seal_first: bool = True, archives: bool = False
) -> tuple[Any, VerifyResult, SealResult]:
    """Seal what is pending (the whole table), read the newest anchor of every witness, verify the
    whole trail against them (and `checkpoint`), and keep the run's outcome for the admin. Used by
    the periodic task and by `manage.py audit_verify`. A witness that cannot be read fails the run:
    the trail cannot be proved complete without it."""
    from .. import anchors as anchoring
    from ..models import AuditVerification

    started = timezone.now()
    sealed = seal_pending(full=True) if seal_first else SealResult()
    found, errors = anchoring.read_latest()  # outside any transaction: witnesses are on the network
    if checkpoint is not None:
        found.append(checkpoint)
    result = verify(anchors=found, archives=archives)
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
