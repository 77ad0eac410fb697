"""A trail that proves it is complete: the chain's head anchored outside the database, and every way a
database superuser can remove, add, copy, move or rewrite events and seals (triggers off, as in
tests/audit/test_chain.py) caught by `audit_verify` against the anchor, with a message that names
what is missing or wrong. The witnesses are real: a file, and S3 with Object Lock on moto's server."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import time_machine
from botocore.exceptions import ClientError
from django.core.management import call_command
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from audit import anchors, chain, witnesses
from audit import services as audit
from audit.models import AuditEvent, AuditSeal, AuditVerification
from tests.audit.trail import COPY_EVENT, SuperuserSession, anchored, events, verify_cli
from tests.aws import REGION, MotoServer, moto_server

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def witness(settings: Any, tmp_path: Path) -> Path:
    """A file witness for the test (the settings fixture restores the configuration afterwards)."""
    path = tmp_path / "anchors.jsonl"
    settings.AUDIT_ANCHOR_FILE = str(path)
    return path


def newest_seals(n: int) -> tuple[list[int], list[int]]:
    seals = list(AuditSeal.objects.order_by("-seq")[:n])
    return [s.seq for s in seals], [s.event_id for s in seals]


# --- the six shapes of the issue --------------------------------------------------------------------


def test_deleting_the_newest_events_with_their_seals_is_named(witness: Path, superuser_sql: SuperuserSession) -> None:
    events(6)
    head = anchored()
    seqs, ids = newest_seals(2)
    superuser_sql("DELETE FROM audit_auditevent WHERE id = ANY(%s)", [ids])
    superuser_sql("DELETE FROM audit_auditseal WHERE seq = ANY(%s)", [seqs])
    code, _, err = verify_cli()
    assert code == 1, err
    assert (
        f"anchor: the head is seal {head - 2}, below seal {head} that anchor file {witness} anchored at " in err
        and f"seals {head - 1}..{head} and their events were removed" in err
    ), err


def test_truncating_the_event_and_seal_tables_is_named(witness: Path, superuser_sql: SuperuserSession) -> None:
    events(4)
    head = anchored()
    superuser_sql("TRUNCATE audit_auditevent, audit_auditseal")
    code, _, err = verify_cli()
    assert code == 1 and f"anchor: the head is seal 0, below seal {head} that anchor file {witness}" in err, err


def test_deleting_an_event_with_all_seals_is_named_and_never_chained_again(
    witness: Path, superuser_sql: SuperuserSession
) -> None:
    made = events(5)
    head = anchored()
    superuser_sql("DELETE FROM audit_auditevent WHERE id = %s", [made[2].pk])
    superuser_sql("DELETE FROM audit_auditseal")
    code, _, err = verify_cli()
    assert code == 1, err
    assert f"anchor: the head is seal 0, below seal {head}" in err
    assert (
        f"unsealed: sealing stopped: there is no seal and no archive to continue from, but anchor file {witness} "
        f"anchored seal {head} at " in err
    ), err
    assert not AuditSeal.objects.exists()  # the sealer did not start a new chain over the history


def test_without_a_witness_the_sealer_will_not_start_over_events_older_than_its_bound(
    superuser_sql: SuperuserSession,
) -> None:
    """The same removal with no witness configured: the remaining events are older than any event
    that was never sealed could be, which is evidence enough of a chain that is gone."""
    with time_machine.travel(timezone.now() - dt.timedelta(hours=2)):
        made = events(4)
    superuser_sql("DELETE FROM audit_auditevent WHERE id = %s", [made[1].pk])
    superuser_sql("DELETE FROM audit_auditseal")
    code, _, err = verify_cli()
    assert (
        code == 1 and "unsealed: sealing stopped: there is no seal and no archive to continue from, but event #" in err
    )
    assert "older than AUDIT_SEAL_MAX_DELAY_SECONDS" in err
    assert not AuditSeal.objects.exists()


def test_an_exact_copy_of_an_event_under_a_new_id_is_named(witness: Path, superuser_sql: SuperuserSession) -> None:
    made = events(3)
    anchored()
    superuser_sql(COPY_EVENT, [made[1].pk])
    copy = AuditEvent.objects.order_by("-id").first()
    assert copy is not None and copy.mac == made[1].mac and copy.reason == made[1].reason
    code, _, err = verify_cli()
    assert code == 1 and f"forged: event #{copy.pk} has no valid MAC (written behind the portal, or a copy" in err, err
    assert not AuditSeal.objects.filter(event_id=copy.pk).exists()


def test_an_edit_before_the_checkpoint_is_named_when_verifying_with_the_checkpoint(
    tmp_path: Path, superuser_sql: SuperuserSession
) -> None:
    import io

    made = events(3)
    out = io.StringIO()
    call_command("audit_checkpoint", stdout=out)
    path = tmp_path / "checkpoint.json"
    path.write_text(out.getvalue())
    events(2)
    superuser_sql("UPDATE audit_auditevent SET reason = 'nothing to see' WHERE id = %s", [made[0].pk])
    code, _, err = verify_cli("--checkpoint", str(path))
    assert code == 1 and f"modified: seal 1: event #{made[0].pk} was changed after it was written" in err, err


def test_edits_after_an_archive_that_covered_every_seal_are_named(
    tmp_path: Path, witness: Path, superuser_sql: SuperuserSession
) -> None:
    with time_machine.travel(timezone.now() - dt.timedelta(days=400)):
        events(4)
    made = chain.archive(older_than=timezone.now() - dt.timedelta(days=365), folder=tmp_path / "archive")
    assert made is not None and made.upto_seq == 4 and not AuditSeal.objects.exists()
    chain.seal_pending(full=True)  # the `audit.archived` event
    later = events(2)
    # The chain goes on from the archive's checkpoint: seal 5 is the `audit.archived` event.
    assert list(AuditSeal.objects.values_list("seq", flat=True)) == [5, 6, 7]
    anchored()
    superuser_sql("UPDATE audit_auditevent SET reason = 'nothing to see' WHERE id = %s", [later[1].pk])
    code, _, err = verify_cli()
    assert code == 1 and f"modified: seal 7: event #{later[1].pk} was changed after it was written" in err, err


def test_seals_put_back_below_the_archive_checkpoint_are_named(tmp_path: Path, superuser_sql: SuperuserSession) -> None:
    with time_machine.travel(timezone.now() - dt.timedelta(days=400)):
        events(3)
    chain.archive(older_than=timezone.now() - dt.timedelta(days=365), folder=tmp_path)
    superuser_sql(
        "INSERT INTO audit_auditseal (seq, event_id, event_mac, chain_mac, sealed_at) VALUES (2, -2, %s, %s, now())",
        ["a" * 64, "b" * 64],
    )
    code, _, err = verify_cli()
    assert code == 1 and "archived: seals 2..2 are at or below the archive checkpoint (seal 3)" in err, err


# --- the property: any tampering with anchored history is detected --------------------------------

OPS = st.one_of(
    st.tuples(st.just("delete_events"), st.lists(st.integers(0, 6), min_size=1, max_size=3)),
    st.tuples(st.just("delete_seals"), st.lists(st.integers(0, 6), min_size=1, max_size=3)),
    st.tuples(st.just("delete_events_and_seals"), st.lists(st.integers(0, 6), min_size=1, max_size=3)),
    st.tuples(st.just("truncate_newest"), st.integers(1, 4)),
    st.tuples(st.just("truncate"), st.sampled_from(["events", "seals", "both"])),
    st.tuples(st.just("copy"), st.integers(0, 6)),
    st.tuples(st.just("move"), st.integers(0, 6)),
    st.tuples(st.just("swap_events"), st.integers(0, 6), st.integers(0, 6)),
    st.tuples(st.just("swap_seals"), st.integers(0, 6), st.integers(0, 6)),
    st.tuples(st.just("edit"), st.integers(0, 6)),
)


def _tamper(sql: SuperuserSession, op: tuple[Any, ...], ids: list[int], seqs: list[int]) -> None:
    kind = op[0]
    if kind == "delete_events":
        sql("DELETE FROM audit_auditevent WHERE id = ANY(%s)", [[ids[i] for i in op[1]]])
    elif kind == "delete_seals":
        sql("DELETE FROM audit_auditseal WHERE seq = ANY(%s)", [[seqs[i] for i in op[1]]])
    elif kind == "delete_events_and_seals":
        sql("DELETE FROM audit_auditevent WHERE id = ANY(%s)", [[ids[i] for i in op[1]]])
        sql("DELETE FROM audit_auditseal WHERE event_id = ANY(%s)", [[ids[i] for i in op[1]]])
    elif kind == "truncate_newest":
        sql(
            "DELETE FROM audit_auditevent WHERE id IN (SELECT id FROM audit_auditevent ORDER BY id DESC LIMIT %s)",
            [op[1]],
        )
        sql(
            "DELETE FROM audit_auditseal WHERE seq IN (SELECT seq FROM audit_auditseal ORDER BY seq DESC LIMIT %s)",
            [op[1]],
        )
    elif kind == "truncate":
        tables = {"events": "audit_auditevent", "seals": "audit_auditseal", "both": "audit_auditevent, audit_auditseal"}
        sql(f"TRUNCATE {tables[op[1]]}")
    elif kind == "copy":
        sql(COPY_EVENT, [ids[op[1]]])
    elif kind == "move":
        sql("UPDATE audit_auditevent SET id = id + 100000 WHERE id = %s", [ids[op[1]]])
    elif kind == "swap_events" and op[1] != op[2]:
        a, b = ids[op[1]], ids[op[2]]
        sql("UPDATE audit_auditevent SET id = -1 WHERE id = %s", [a])
        sql("UPDATE audit_auditevent SET id = %s WHERE id = %s", [a, b])
        sql("UPDATE audit_auditevent SET id = %s WHERE id = -1", [b])
    elif kind == "swap_seals" and op[1] != op[2]:
        a, b = seqs[op[1]], seqs[op[2]]
        sql("UPDATE audit_auditseal SET seq = -1 WHERE seq = %s", [a])
        sql("UPDATE audit_auditseal SET seq = %s WHERE seq = %s", [a, b])
        sql("UPDATE audit_auditseal SET seq = %s WHERE seq = -1", [b])
    elif kind == "edit":
        sql("UPDATE audit_auditevent SET reason = reason || ' (edited)' WHERE id = %s", [ids[op[1]]])


def _events_table(sql: SuperuserSession) -> list[tuple[Any, ...]]:
    return sql.rows("SELECT * FROM audit_auditevent ORDER BY id")


@pytest.mark.fault
@hypothesis_settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(OPS, min_size=1, max_size=3))
def test_any_tampering_with_anchored_history_is_detected(
    ops: list[tuple[Any, ...]], witness: Path, superuser_sql: SuperuserSession
) -> None:
    """Random deletions, insertions (copies), duplications, moves, reorderings, edits and truncations
    of events and/or seals, newest or anywhere, after the head was anchored: verification fails,
    unless the events are exactly what was anchored (deleting only the newest seals lets the sealer
    rebuild the very same seals, which hides nothing)."""
    superuser_sql("TRUNCATE audit_auditevent, audit_auditseal, audit_auditverification")
    witness.unlink(missing_ok=True)
    events(6)
    anchored()
    ids = [row[0] for row in superuser_sql.rows("SELECT id FROM audit_auditevent ORDER BY id")]
    seqs = [row[0] for row in superuser_sql.rows("SELECT seq FROM audit_auditseal ORDER BY seq")]
    assert len(ids) == len(seqs) == 7  # six events and the witness's start, all sealed and anchored
    before = _events_table(superuser_sql)
    for op in ops:
        _tamper(superuser_sql, op, ids, seqs)
    _, result, _ = chain.verify_and_record()
    if _events_table(superuser_sql) != before:
        assert not result.ok, (ops, "tampering went unnoticed")
        assert result.problems[0].message
    if not result.ok:
        assert AuditVerification.objects.latest().ok is False


# --- the anchoring itself -------------------------------------------------------------------------


def test_the_anchor_task_notices_a_deletion_within_one_interval(
    witness: Path, superuser_sql: SuperuserSession, caplog: pytest.LogCaptureFixture
) -> None:
    made = events(5)
    head = anchored()
    lines = witness.read_text().count("\n")
    superuser_sql("DELETE FROM audit_auditevent WHERE id = %s", [made[2].pk])
    with caplog.at_level(logging.ERROR, logger="audit.anchors"):
        run = anchors.anchor_head()
    assert [p.kind for p in run.problems] == ["anchor"]
    assert (
        f"only {head - 1} of the {head} seals since seal 0 still have their seal and event" in run.problems[0].message
    )
    assert "events or seals were deleted" in caplog.text
    latest = AuditVerification.objects.latest()
    assert not latest.ok and latest.problems[0]["kind"] == "anchor"
    assert witness.read_text().count("\n") == lines  # nothing anchored over the loss
    anchors.anchor_head()
    assert AuditVerification.objects.filter(ok=False).count() == 1  # the same failure is not recorded twice


def test_the_anchor_task_notices_removed_newest_seals(witness: Path, superuser_sql: SuperuserSession) -> None:
    events(3)
    head = anchored()
    superuser_sql("DELETE FROM audit_auditseal WHERE seq = %s", [head])
    superuser_sql("DELETE FROM audit_auditevent WHERE id = (SELECT max(id) FROM audit_auditevent)")
    run = anchors.anchor_head()
    assert [p.kind for p in run.problems] == ["anchor"]
    assert f"the head is seal {head - 1}, below seal {head}" in run.problems[0].message


def test_the_anchor_task_never_anchors_seals_that_do_not_continue_the_anchored_chain(
    witness: Path, superuser_sql: SuperuserSession
) -> None:
    """Everything sealed since the newest anchor is checked (links and events) before it is
    anchored: an event edited in that window is named within one interval, not an hour later."""
    events(3)
    anchored()
    later = events(2)
    superuser_sql("UPDATE audit_auditevent SET reason = 'nothing to see' WHERE id = %s", [later[0].pk])
    lines = witness.read_text().count("\n")
    run = anchors.anchor_head()
    assert [p.kind for p in run.problems] == ["modified"], run.problems
    assert f"event #{later[0].pk} was changed after it was written" in run.problems[0].message
    assert witness.read_text().count("\n") == lines


def _renumber(sql: SuperuserSession, first: int, last: int, by: int) -> None:
    """Move seals first..last by `by` seqs (two steps: the ranges overlap)."""
    sql("UPDATE audit_auditseal SET seq = -(seq + %s) WHERE seq BETWEEN %s AND %s", [by, first, last])
    sql("UPDATE audit_auditseal SET seq = -seq WHERE seq < 0")


def test_the_anchor_task_names_a_deletion_below_the_anchor_hidden_by_renumbering_and_the_anchored_mac(
    witness: Path, superuser_sql: SuperuserSession
) -> None:
    """The review's attack: delete an older event with its seal, renumber every later seal down by
    one (the count up to the anchored seal holds again, with a seal written after the anchor), and
    write the anchored chained MAC back at the anchored seq. The seal and the count agree with the
    anchor; the link into the anchored seal does not."""
    events(6)
    head = anchored()
    anchored_mac = AuditSeal.objects.get(seq=head).chain_mac
    events(3)  # written after the anchor, not anchored yet
    newest = AuditSeal.objects.order_by("-seq").first()
    assert newest is not None and newest.seq == head + 3
    victim = AuditSeal.objects.get(seq=2)
    superuser_sql("DELETE FROM audit_auditevent WHERE id = %s", [victim.event_id])
    superuser_sql("DELETE FROM audit_auditseal WHERE seq = 2")
    _renumber(superuser_sql, 3, newest.seq, -1)
    superuser_sql("UPDATE audit_auditseal SET chain_mac = %s WHERE seq = %s", [anchored_mac, head])
    # What the anchor task compared before: the anchored seal's MAC and the count up to it both hold.
    present = superuser_sql.rows(
        "SELECT count(*) FROM audit_auditseal s JOIN audit_auditevent e ON e.id = s.event_id WHERE s.seq <= %s",
        [head],
    )
    assert AuditSeal.objects.get(seq=head).chain_mac == anchored_mac and present == [(head,)]
    lines = witness.read_text().count("\n")
    run = anchors.anchor_head()
    assert run.problems and run.problems[0].kind == "anchor", run.problems
    assert (
        f"anchor: anchor file {witness} anchored seal {head} at " in run.problems[0].message
        and f"its link from seal {head - 1} does not hold: seals below it were renumbered or rewritten"
        in run.problems[0].message
    ), run.problems
    assert witness.read_text().count("\n") == lines  # nothing anchored over it
    assert not AuditVerification.objects.latest().ok
    code, _, err = verify_cli()
    assert code == 1 and "chain_broken: seal 2: chained MAC does not follow seal 1" in err, err


def test_a_deletion_below_the_anchor_that_keeps_the_anchored_links_is_left_to_the_full_verification(
    witness: Path, superuser_sql: SuperuserSession
) -> None:
    """What the anchor task does not see, as docs/security.md says: the hole left by a deleted event
    filled by renumbering only seals below seq-1 and moving the newest seal into it, so that seals
    seq-1 and seq, the count up to the anchor and every link after it are as they were. Finding it
    takes the walk over everything below the anchor: the hourly verification (or audit_verify)."""
    events(6)
    head = anchored()
    events(3)
    newest = head + 3
    victim = AuditSeal.objects.get(seq=2)
    superuser_sql("DELETE FROM audit_auditevent WHERE id = %s", [victim.event_id])
    superuser_sql("DELETE FROM audit_auditseal WHERE seq = 2")
    _renumber(superuser_sql, 3, head - 2, -1)
    superuser_sql("UPDATE audit_auditseal SET seq = %s WHERE seq = %s", [head - 2, newest])
    run = anchors.anchor_head()
    assert not run.problems and run.head == newest - 1  # not seen within the anchor interval
    code, _, err = verify_cli()
    assert code == 1 and "chain_broken: seal 2: chained MAC does not follow seal 1" in err, err


def test_anchors_go_to_the_siem_stream(witness: Path) -> None:
    class Lines(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append(record.getMessage())

    logger = logging.getLogger("audit.siem")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        events(2)
        head = anchored()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    sent = [json.loads(line) for line in handler.lines if '"audit_anchor"' in line]
    assert sent and sent[-1]["seq"] == head and anchors.parse(sent[-1], where="siem") is not None


def test_the_newest_anchor_wins_and_a_replayed_old_one_lowers_nothing(witness: Path) -> None:
    events(2)
    first = anchored()
    old_line = witness.read_text().splitlines()[0]
    events(3)
    head = anchored()
    assert head > first
    with witness.open("a") as f:
        f.write(old_line + "\n")  # an old anchor written again, as last
    found, errors = anchors.read_latest()
    assert [a.seq for a in found] == [head] and not errors
    code, out, _ = verify_cli()
    assert code == 0 and "1 anchor(s) hold" in out


def test_a_flood_of_replayed_old_anchors_cannot_push_the_newest_out_of_sight(
    witness: Path, superuser_sql: SuperuserSession
) -> None:
    """Whoever can append to the file can append old, validly signed lines without limit. The reader
    looks at the whole file (a window at its end would lose the newest anchor behind them), in a
    process that read it before (only what was appended) and in one that did not (all of it)."""
    events(2)
    first = anchored()
    old_lines = witness.read_text().splitlines()[:1]
    events(3)
    head = anchored()
    old = (old_lines[0] + "\n").encode()
    flood = old * (3 * witnesses.FILE_BLOCK // len(old))  # more than one block of the backward read
    with witness.open("ab") as f:
        f.write(flood)
    assert witness.stat().st_size > 3 * witnesses.FILE_BLOCK
    for fresh in (False, True):
        if fresh:
            witnesses._scans.clear()  # a new process
        found, errors = anchors.read_latest()
        assert [a.seq for a in found] == [head] and not errors, (fresh, found, errors)
    assert first < head
    # And the point of it: the newest anchored events removed are still named.
    seqs, ids = newest_seals(1)
    superuser_sql("DELETE FROM audit_auditevent WHERE id = ANY(%s)", [ids])
    superuser_sql("DELETE FROM audit_auditseal WHERE seq = ANY(%s)", [seqs])
    witnesses._scans.clear()
    code, _, err = verify_cli()
    assert code == 1 and f"the head is seal {head - 1}, below seal {head} that anchor file {witness}" in err, err


def test_lines_of_the_anchor_file_that_are_not_anchors_are_named_by_line_whether_read_whole_or_appended(
    witness: Path,
) -> None:
    events(2)
    head = anchored()
    with witness.open("a") as f:
        f.write("not json at all\n")
        f.write(json.dumps(anchors.document(head + 5, "f" * 64) | {"signature": "0" * 64}) + "\n")
    lines = witness.read_text().count("\n")
    witnesses._scans.clear()
    whole = anchors.read_latest()
    assert [a.seq for a in whole[0]] == [head]
    assert whole[1] == [f"anchor file {witness}: line {n} is not a signed anchor" for n in (lines - 1, lines)]
    with witness.open("a") as f:
        f.write("{}\n")  # read as appended, by the same process
    assert anchors.read_latest()[1] == whole[1] + [f"anchor file {witness}: line {lines + 1} is not a signed anchor"]
    witnesses._scans.clear()
    assert anchors.read_latest()[1] == whole[1] + [f"anchor file {witness}: line {lines + 1} is not a signed anchor"]


def test_an_anchor_file_that_shrank_is_reported_and_read_again(witness: Path) -> None:
    events(2)
    anchored()
    events(2)
    head = anchored()
    assert anchors.read_latest()[0][0].seq == head
    kept = witness.read_text().splitlines()[0]
    witness.write_text(kept + "\n")  # truncated to its first anchor: not append-only
    found, errors = anchors.read_latest()
    assert [a.seq for a in found] == [json.loads(kept)["seq"]]
    assert errors == [
        f"anchor file {witness}: the file is shorter than, or not the file, this process read before: an anchor "
        "file must only grow (read again from its start)"
    ]


def test_an_anchor_not_signed_with_the_audit_key_fails_verification(witness: Path) -> None:
    events(2)
    head = anchored()
    forged = anchors.document(head + 10, "f" * 64) | {"signature": "0" * 64}
    with witness.open("a") as f:
        f.write(json.dumps(forged) + "\n")
    code, _, err = verify_cli()
    assert code == 1 and f"witness: anchor file {witness}: line" in err and "is not a signed anchor" in err, err


def test_an_unreadable_witness_fails_verification_closed(settings: Any, tmp_path: Path) -> None:
    events(1)
    settings.AUDIT_ANCHOR_FILE = str(tmp_path)  # a directory: open() fails
    code, _, err = verify_cli()
    assert code == 1 and f"witness: cannot read the anchor file {tmp_path}: Is a directory" in err, err
    assert err.count("\n") == 1  # one clear line


def test_a_beat_outage_raises_no_false_alarm(witness: Path, superuser_sql: SuperuserSession) -> None:
    """Sealing and anchoring stopped for two hours (worker down) while the portal kept writing:
    nothing is refused when the beat comes back, because lateness is measured from the head's own
    sealing, not from the clock."""
    events(3)
    anchored()
    superuser_sql("UPDATE audit_auditseal SET sealed_at = now() - interval '2 hours'")
    for minutes in (110, 60, 20):
        with time_machine.travel(timezone.now() - dt.timedelta(minutes=minutes)):
            audit.record(action="test.during_the_outage", actor=None)
    sealed = chain.seal_pending()
    assert sealed.sealed == 3 and not sealed.late
    anchored()
    code, _, err = verify_cli()
    assert code == 0, err


def test_a_removed_seal_does_not_let_the_sealer_launder_an_old_event(superuser_sql: SuperuserSession) -> None:
    """Without a witness: the newest seal removed, its (old) event would be sealed again after the
    new head. It was already older than AUDIT_SEAL_MAX_DELAY_SECONDS when the head was sealed, so
    the sealer leaves it to an operator, who accepts it as a recorded decision."""
    with time_machine.travel(timezone.now() - dt.timedelta(hours=2)):
        made = events(5)
    superuser_sql("DELETE FROM audit_auditseal WHERE seq = 5")
    assert chain.seal_pending().late == [made[4].pk]
    code, _, err = verify_cli()
    assert code == 1 and f"unsealed: event #{made[4].pk} is older than 0:05:00 and still unsealed" in err, err
    import io

    out = io.StringIO()
    call_command("audit_accept_unsealed", "--reason", "restored from the nightly backup", stdout=out)
    assert "sealed 2 events" in out.getvalue()
    accepted = AuditEvent.objects.get(action="audit.unsealed_accepted")
    assert accepted.metadata["event_ids"] == [made[4].pk] and accepted.reason == "restored from the nightly backup"
    assert verify_cli()[0] == 0


def test_accepting_never_restarts_a_chain_that_a_witness_anchored(
    witness: Path, superuser_sql: SuperuserSession
) -> None:
    events(3)
    anchored()
    superuser_sql("DELETE FROM audit_auditseal")
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="anchored seal"):
        call_command("audit_accept_unsealed", "--reason", "let me")
    assert not AuditSeal.objects.exists() and not AuditEvent.objects.filter(action="audit.unsealed_accepted").exists()


def test_check_deploy_warns_without_a_witness(settings: Any) -> None:
    from audit.checks import anchor_witness_configured

    settings.AUDIT_ANCHOR_FILE, settings.AUDIT_ANCHOR_S3_BUCKET = "", ""
    assert [m.id for m in anchor_witness_configured(None)] == ["audit.W001"]
    settings.AUDIT_ANCHOR_S3_BUCKET = "anchors"
    assert anchor_witness_configured(None) == []


# --- the S3 witness, on moto's server -------------------------------------------------------------

BUCKET = "audit-anchors-test"
# No "/" in the tests' prefixes: moto's server (5.2.5), with IAM authorisation enforced, answers
# SignatureDoesNotMatch to a signed S3 request whose query carries a "/" (ListObjectsV2 Prefix=a/),
# which AWS accepts. The witness itself takes any prefix (the default is "audit-anchors/").
ROOT_PREFIX = "portal-"


def documented_policy() -> dict[str, Any]:
    """The least-privilege policy of docs/operations.md, for this bucket and prefix: the test uses the
    documented text, so the documentation cannot drift from what works."""
    text = (ROOT / "docs" / "operations.md").read_text()
    block = re.search(r"least-privilege IAM policy.*?```json\n(.*?)```", text, re.S | re.I)
    assert block, "docs/operations.md lost its least-privilege IAM policy"
    return json.loads(block.group(1).replace("EXAMPLE-BUCKET", BUCKET).replace("EXAMPLE-PREFIX/", ROOT_PREFIX))


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        s3, iam = server.client("s3"), server.client("iam")
        s3.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}, ObjectLockEnabledForBucket=True
        )
        policy = documented_policy()
        for statement in policy["Statement"]:
            # moto evaluates IAM conditions only for sts:ExternalId: a statement with another
            # condition key (the documented s3:prefix on ListBucket) would never match there.
            statement.pop("Condition", None)
        iam.create_user(UserName="portal")
        iam.put_user_policy(UserName="portal", PolicyName="anchors", PolicyDocument=json.dumps(policy))
        iam.create_user(UserName="admin")
        iam.put_user_policy(
            UserName="admin",
            PolicyName="all",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        for user in ("portal", "admin"):
            keys = iam.create_access_key(UserName=user)["AccessKey"]
            server.keys[user] = (keys["AccessKeyId"], keys["SecretAccessKey"])
        server.enforce_auth()
        yield server


@pytest.fixture
def s3_witness(moto: MotoServer, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[anchors.S3Witness]:
    """The portal's S3 witness with the documented policy's keys, under a prefix of its own."""
    key_id, secret = moto.keys["portal"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    witnesses._s3_client.cache_clear()
    settings.AUDIT_ANCHOR_S3_BUCKET = BUCKET
    settings.AUDIT_ANCHOR_S3_PREFIX = f"{ROOT_PREFIX}{uuid.uuid4().hex[:8]}-"
    settings.AUDIT_ANCHOR_S3_ENDPOINT_URL = moto.url
    settings.AUDIT_ANCHOR_S3_RETENTION_DAYS = 1
    settings.AWS_REGION = REGION
    configured = anchors.configured()
    assert isinstance(configured[-1], anchors.S3Witness)
    yield configured[-1]
    witnesses._s3_client.cache_clear()


def test_s3_anchors_are_locked_and_the_newest_is_listed_first(moto: MotoServer, s3_witness: anchors.S3Witness) -> None:
    events(2)
    first = anchored()
    events(3)
    head = anchored()
    admin = moto.client("s3", moto.keys["admin"])
    keys = [o["Key"] for o in admin.list_objects_v2(Bucket=BUCKET, Prefix=s3_witness.prefix)["Contents"]]
    assert keys[0] == s3_witness.key(head) and s3_witness.key(first) in keys  # newest first, without paging
    assert keys[0].endswith(f"{anchors.INVERTED - head:019d}.json")
    stored = admin.head_object(Bucket=BUCKET, Key=keys[0])
    assert stored["ObjectLockMode"] == "COMPLIANCE"
    assert stored["ObjectLockRetainUntilDate"] > timezone.now() + dt.timedelta(hours=23)
    # Object Lock: not even an administrator removes a locked version before its date.
    with pytest.raises(ClientError, match="AccessDenied"):
        admin.delete_object(Bucket=BUCKET, Key=keys[0], VersionId=stored["VersionId"])
    # The documented policy gives the portal no delete at all (no delete marker hiding the newest).
    portal = moto.client("s3", moto.keys["portal"])
    with pytest.raises(ClientError, match="AccessDenied"):
        portal.delete_object(Bucket=BUCKET, Key=keys[0])
    # ...and nothing outside its prefix.
    with pytest.raises(ClientError, match="AccessDenied"):
        portal.put_object(Bucket=BUCKET, Key="elsewhere/x.json", Body=b"{}")
    code, out, err = verify_cli()
    assert code == 0 and "1 anchor(s) hold" in out, err


def test_an_s3_anchored_head_that_was_removed_is_named(
    s3_witness: anchors.S3Witness, superuser_sql: SuperuserSession
) -> None:
    events(4)
    head = anchored()
    seqs, ids = newest_seals(1)
    superuser_sql("DELETE FROM audit_auditevent WHERE id = ANY(%s)", [ids])
    superuser_sql("DELETE FROM audit_auditseal WHERE seq = ANY(%s)", [seqs])
    code, _, err = verify_cli()
    assert code == 1 and f"below seal {head} that s3://{BUCKET}/{s3_witness.prefix} anchored at" in err, err


def test_a_replayed_or_forged_s3_anchor_cannot_lower_the_newest(
    moto: MotoServer, s3_witness: anchors.S3Witness
) -> None:
    events(2)
    first = anchored()
    events(2)
    head = anchored()
    portal = moto.client("s3", moto.keys["portal"])
    old = portal.get_object(Bucket=BUCKET, Key=s3_witness.key(first))["Body"].read()
    # Replayed under its own name: a new version of an old anchor, still below the newest.
    portal.put_object(Bucket=BUCKET, Key=s3_witness.key(first), Body=old, ChecksumAlgorithm="SHA256")
    assert [a.seq for a in anchors.read_latest()[0]] == [head]
    # Replayed under a higher name, to pose as the newest: its content does not say that seal.
    portal.put_object(Bucket=BUCKET, Key=s3_witness.key(head + 50), Body=old, ChecksumAlgorithm="SHA256")
    found, errors = anchors.read_latest()
    assert [a.seq for a in found] == [head]
    assert errors == [
        f"s3://{BUCKET}/{s3_witness.prefix}: object {s3_witness.key(head + 50)} is not an anchor of seal {head + 50} "
        "signed with the audit key"
    ]
    assert verify_cli()[0] == 1


def test_an_unreachable_s3_witness_fails_verification_closed(s3_witness: anchors.S3Witness, settings: Any) -> None:
    events(1)
    settings.AUDIT_ANCHOR_S3_BUCKET = "no-such-bucket"
    code, _, err = verify_cli()
    assert code == 1 and f"witness: cannot read s3://no-such-bucket/{s3_witness.prefix}: " in err, err


def test_review_accepting_while_the_sealer_runs_does_not_record_an_acceptance_that_sealed_nothing(
    superuser_sql: SuperuserSession,
) -> None:
    """Review finding: `_seal_locked` returns an empty result, not `blocked`, when another sealer
    holds the advisory lock (the beat's, every 5 s). `unsealed_events_accept` then commits the
    `audit.unsealed_accepted` event naming the events, seals none of them, and the command prints
    'nothing to accept'. The late events stay late (the next periodic run does not know they were
    accepted)."""
    with time_machine.travel(timezone.now() - dt.timedelta(hours=2)):
        made = events(5)
    superuser_sql("DELETE FROM audit_auditseal WHERE seq = 5")
    assert chain.seal_pending().late == [made[4].pk]
    superuser_sql("SELECT pg_advisory_lock(%s)", [chain.SEAL_LOCK])  # the periodic sealer, mid-run
    try:
        try:
            result = chain.unsealed_events_accept(actor=None, reason="restored from backup")
        except ValueError:
            result = None  # refusing is fine
    finally:
        superuser_sql("SELECT pg_advisory_unlock(%s)", [chain.SEAL_LOCK])
    accepted = AuditEvent.objects.filter(action="audit.unsealed_accepted").exists()
    sealed = AuditSeal.objects.filter(event_id=made[4].pk).exists()
    assert accepted == sealed, (result, accepted, sealed)


def _late_event(superuser_sql: SuperuserSession) -> AuditEvent:
    """One event whose seal was removed after it was old: the sealer leaves it to an operator."""
    with time_machine.travel(timezone.now() - dt.timedelta(hours=2)):
        made = events(3)
    superuser_sql("DELETE FROM audit_auditseal WHERE seq = 3")
    assert chain.seal_pending().late == [made[2].pk]
    return made[2]


def test_accepting_waits_for_a_running_sealer_then_seals_what_it_records(superuser_sql: SuperuserSession) -> None:
    import threading
    import time

    late = _late_event(superuser_sql)
    superuser_sql("SELECT pg_advisory_lock(%s)", [chain.SEAL_LOCK])  # the periodic sealer, mid-run
    release = threading.Timer(1.0, superuser_sql, ["SELECT pg_advisory_unlock(%s)", [chain.SEAL_LOCK]])
    started = time.monotonic()
    release.start()
    try:
        result = chain.unsealed_events_accept(actor=None, reason="restored from backup", lock_wait=30)
    finally:
        release.join()
    assert time.monotonic() - started >= 0.9  # it waited for the lock instead of returning empty
    assert result.sealed == 2  # the late event and the acceptance itself
    accepted = AuditEvent.objects.get(action="audit.unsealed_accepted")
    assert accepted.metadata["event_ids"] == [late.pk]
    assert AuditSeal.objects.filter(event_id__in=[late.pk, accepted.pk]).count() == 2


def test_accepting_refuses_with_a_clear_error_when_the_sealer_holds_its_lock_too_long(
    superuser_sql: SuperuserSession,
) -> None:
    from django.core.management.base import CommandError

    late = _late_event(superuser_sql)
    superuser_sql("SELECT pg_advisory_lock(%s)", [chain.SEAL_LOCK])
    try:
        with pytest.raises(CommandError, match=r"the audit sealer has held its lock for more than 0\.5 s"):
            call_command("audit_accept_unsealed", "--reason", "restored", "--wait", "0.5")
    finally:
        superuser_sql("SELECT pg_advisory_unlock(%s)", [chain.SEAL_LOCK])
    assert not AuditEvent.objects.filter(action="audit.unsealed_accepted").exists()
    assert not AuditSeal.objects.filter(event_id=late.pk).exists()
    assert chain.unsealed_candidates() == [late.pk]  # still there, for the next attempt
