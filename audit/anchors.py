"""Anchors: the audit chain's head, signed, kept where the database's superuser cannot reach.

Everything in the database can be rewritten by whoever administers it: events, seals, archive
checkpoints, the record of past verifications. What they cannot rewrite is a statement that already
left the database. Every `AUDIT_ANCHOR_INTERVAL_SECONDS` (beat, `audit.tasks.anchor_audit_trail`)
the head of the chain (its sequence number and chained MAC, signed with the audit key) is written:

- to the SIEM stream (the `audit.siem` logger, one `audit_anchor` JSON line);
- to each configured **witness**: an append-only JSON-lines file (`AUDIT_ANCHOR_FILE`) and/or an
  S3 bucket with Object Lock (`AUDIT_ANCHOR_S3_BUCKET`, `AUDIT_ANCHOR_S3_PREFIX`), one object per
  head, named by the inverted sequence number so that the newest is the first key a listing returns
  (no listing of years of objects), and a replayed old anchor cannot lower the newest.

Before writing, the task checks the database against the newest anchor of each witness
(`check_in_database`: the anchored seal exists with the anchored chained MAC and the link into it
from the seal before holds, the head is not below it, every seal up to it still has its event, and
every seal written since it links and has its event unchanged); a mismatch is logged as an error,
recorded as a failed verification, and nothing is anchored over it. That check costs what was
written since the last anchor, not the trail's size, so it cannot see every rewrite below the
anchored seal (docs/security.md lists which); `audit_verify` and the periodic verification walk the
whole trail against the same anchors (audit/chain/verification.py `verify`).

A chained MAC commits to every event and seal before it, so an anchor of seal N proves the whole
trail up to N; whoever wants to change anything before N must also change every anchor of it.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field

from django.db import connection
from django.utils import timezone

from . import chain, siem
from .chain import Problem

# The documents and the witnesses live in audit/witnesses.py; their names stay reachable here.
from .witnesses import (  # noqa: F401
    FORMAT,
    INVERTED,
    NAME,
    Anchor,
    FileWitness,
    S3Witness,
    Witness,
    WitnessError,
    configured,
    document,
    parse,
    read_latest,
)

log = logging.getLogger(__name__)

# --- the periodic anchoring ---------------------------------------------------------------------


def check_in_database(anchor: Anchor, head: chain.Head | None = None) -> list[Problem]:
    """Does the database still hold what `anchor` says, and does the chain go on from it to `head`
    (the head about to be anchored; read here when not given)? Run by every anchoring, so its cost
    is a few index lookups, one count over the seals since the last archive, and a full check of
    the seals written since the anchor only (`chain.verify` walks the whole trail):

    - the head is not below the anchored seal, and that seal is there with the anchored chained MAC;
    - every seal up to it still has its event (the count): a deletion that leaves a hole is named;
    - the link *into* the anchored seal holds: HMAC(chained MAC of seal seq-1 | seq | event id |
      event MAC) is the anchored MAC, and that event is there with its MAC. Deleting an older event
      and renumbering the seals after it, then writing the anchored MAC back at the anchored seq,
      breaks this link (the seal now there is another event's);
    - every seal from the anchored one up to the head links to the one before, and its event is
      there, unchanged: nothing is anchored that does not continue the anchored chain.

    What it cannot see, for want of walking everything below the anchor: a rewrite below the
    anchored seal that keeps seal seq-1, the anchored seal and the count as they were (an event
    edited, replaced or deleted and its hole filled with another row, seals renumbered below
    seq-1). The hourly full verification finds those (docs/security.md)."""
    said = f"{anchor.where} anchored seal {anchor.seq} at {anchor.at}"
    with connection.cursor() as cur:
        archived = chain._archive_row(cur)
        upto = int(archived[0]) if archived else 0
        if archived is not None and not hmac.compare_digest(
            archived[3], chain.archive_signature(archived[0], archived[1], archived[2])
        ):
            return [Problem("chain_broken", upto, None, f"the last archive's checkpoint (seal {upto}) is not signed")]
        if head is None:
            head, broken = chain._head_of(cur)
            if head is None:
                return [Problem("chain_broken", None, None, broken)]
        if anchor.seq <= upto:
            if archived is not None and anchor.seq == upto and anchor.chain_mac != archived[1]:
                return [Problem("anchor", anchor.seq, None, f"anchor: {said}, but the archive checkpoint differs")]
            # Archived since: the signed checkpoint stands for it; what follows must go on from it.
            return _check_since(upto + 1, archived[1] if archived else chain.GENESIS, head, said=said)
        if head.seq < anchor.seq:
            return [
                Problem(
                    "anchor",
                    anchor.seq,
                    None,
                    f"anchor: the head is seal {head.seq}, below seal {anchor.seq} that {anchor.where} anchored at "
                    f"{anchor.at}: seals {head.seq + 1}..{anchor.seq} and their events were removed",
                )
            ]
        cur.execute("SELECT seq, chain_mac FROM audit_auditseal WHERE seq IN (%s, %s)", [anchor.seq - 1, anchor.seq])
        found = dict(cur.fetchall())
        if anchor.seq not in found:
            return [Problem("anchor", anchor.seq, None, f"anchor: {said}, and that seal is missing")]
        if not hmac.compare_digest(found[anchor.seq], anchor.chain_mac):
            return [
                Problem("anchor", anchor.seq, None, f"anchor: {said} with another chained MAC: the trail was rewritten")
            ]
        cur.execute(
            "SELECT count(*) FROM audit_auditseal s JOIN audit_auditevent e ON e.id = s.event_id"
            " WHERE s.seq > %s AND s.seq <= %s",
            [upto, anchor.seq],
        )
        present = int(cur.fetchone()[0])
    if present != anchor.seq - upto:
        return [
            Problem(
                "anchor",
                anchor.seq,
                None,
                f"anchor: {said}, but only {present} of the {anchor.seq - upto} seals since seal {upto} still have "
                "their seal and event: events or seals were deleted (audit_verify names them)",
            )
        ]
    if anchor.seq - 1 == upto:
        before = archived[1] if archived else chain.GENESIS
    elif anchor.seq - 1 in found:
        before = found[anchor.seq - 1]
    else:  # the count holds, so a seal below was renumbered into the range
        return [Problem("anchor", anchor.seq, None, f"anchor: {said}, but seal {anchor.seq - 1} is missing")]
    return _check_since(anchor.seq, before, head, said=said, anchored=anchor.seq)


def _check_since(since: int, previous: str, head: chain.Head, *, said: str, anchored: int = 0) -> list[Problem]:
    """The seals from `since` up to `head`, chained from `previous` (a trusted MAC or the stored
    one of seal since-1): each link, each event. A broken link into the `anchored` seal is said as
    what it means: the seals below it were moved."""
    if head.seq < since:
        return []
    problems: list[Problem] = []
    walked = chain._check_seals(
        chain._walk(since, head.seq), expected=since, previous=previous, secret=chain.key(), problems=problems
    )
    if walked.expected <= head.seq:
        problems.append(Problem("gap", walked.expected, None, f"seals {walked.expected}..{head.seq} are missing"))
    elif not problems and not hmac.compare_digest(walked.previous, head.chain_mac):
        problems.append(Problem("chain_broken", head.seq, None, f"seal {head.seq} changed while it was checked"))
    for i, problem in enumerate(problems):
        if problem.kind == "chain_broken" and problem.seq == anchored:
            problems[i] = Problem(
                "anchor",
                anchored,
                problem.event_id,
                f"anchor: {said}, and seal {anchored} still has that chained MAC, but its link from seal "
                f"{anchored - 1} does not hold: seals below it were renumbered or rewritten (audit_verify names them)",
            )
    return problems


@dataclass
class AnchorRun:
    head: int = 0
    written: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # witnesses that held no anchor before
    problems: list[Problem] = field(default_factory=list)


_emitted: dict[str, int] = {}  # the head this process last sent to the SIEM stream


def anchor_head() -> AnchorRun:
    """Seal what is pending, check the database against every witness's newest anchor, and, when
    it holds, anchor the head to every witness that is behind it and to the SIEM stream."""
    from . import services as audit

    chain.seal_pending()
    run = AnchorRun()
    try:
        # Read once, before the checks: what is checked (the seals from each anchor up to it) is
        # what is anchored, even while the sealer adds seals above it.
        head = chain.head()
    except ValueError as exc:
        run.problems.append(Problem("chain_broken", None, None, str(exc)))
        _report(run)
        return run
    run.head = head.seq
    behind: list[tuple[Witness, Anchor | None]] = []
    checked: set[tuple[int, str]] = set()  # witnesses usually hold the same anchor: check it once
    for witness in configured():
        try:
            anchor, bad = witness.latest()
        except WitnessError as exc:
            run.problems.append(Problem("witness", None, None, str(exc)))
            continue
        run.problems.extend(Problem("witness", None, None, line) for line in bad)
        if anchor is not None and (anchor.seq, anchor.chain_mac) not in checked:
            checked.add((anchor.seq, anchor.chain_mac))
            run.problems.extend(check_in_database(anchor, head))
        behind.append((witness, anchor))
    if any(p.kind != "witness" for p in run.problems) or head.seq == 0:
        # Never anchor over a database that lost what was anchored: the witnesses keep the last
        # good head, and every verification fails until someone looks.
        _report(run)
        return run
    doc = document(head.seq, head.chain_mac)
    for witness, anchor in behind:
        if anchor is not None and anchor.seq >= head.seq:
            continue
        try:
            witness.write(doc)
        except WitnessError as exc:
            run.problems.append(Problem("witness", None, None, str(exc)))
            continue
        run.written.append(witness.name)
        if anchor is None:
            run.started.append(witness.name)
    if run.written or _emitted.get("seq") != head.seq:
        siem.emit_anchor(doc)
        _emitted["seq"] = head.seq
    for name in run.started:
        # A witness that held nothing: new, or emptied. Either way the trail says so, and an
        # auditor who sees it more than once per witness knows where to look.
        log.warning("audit anchor: %s held no anchor; it starts at seal %s", name, head.seq)
        audit.record(
            action="audit.anchor_witness_started",
            actor=None,
            target_type="audit.witness",
            target_repr=name[:300],
            metadata={"witness": name, "seq": head.seq, "chain_mac": head.chain_mac},
        )
    _report(run)
    return run


def _report(run: AnchorRun) -> None:
    """Log each problem, and keep a failed verification for the admin (once per distinct failure)."""
    if not run.problems:
        return
    from .models import AuditVerification

    result = chain.VerifyResult(head_seq=run.head, problems=run.problems)
    problems = [p.__dict__ for p in result.first_by_kind()]
    for p in result.first_by_kind():
        log.error("audit trail: %s", p.message)
    latest = AuditVerification.objects.order_by("-started_at").first()
    if latest is not None and not latest.ok and latest.problems == problems:
        return  # the same failure as the last run: logged again, not recorded again
    now = timezone.now()
    AuditVerification.objects.create(
        started_at=now, finished_at=now, ok=False, checked=0, head_seq=run.head, problems=problems
    )
