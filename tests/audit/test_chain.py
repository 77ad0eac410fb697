"""Tamper evidence, proved by tampering: a superuser session (triggers switched off with
session_replication_role, as an attacker with the database's keys would) edits, deletes, inserts and
reorders events and seals behind the portal's back, and `audit_verify` names each."""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from audit import chain
from audit import services as audit
from audit.models import AuditEvent, AuditSeal, AuditVerification
from tests.audit.trail import events, verify_cli

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_untouched_trail_verifies() -> None:
    events(5)
    audit.record(action="test.late", actor=None)  # not sealed yet: audit_verify seals it first
    code, out, err = verify_cli()
    assert code == 0 and "audit trail intact: 6 sealed events checked from genesis, head 6 (1 newly sealed)" in out, err
    # Without a witness the command says what it could not prove.
    assert "no anchor was checked" in out
    assert AuditVerification.objects.latest().ok


def test_an_edited_event_is_named(superuser_sql: Any) -> None:
    made = events(5)
    superuser_sql("UPDATE audit_auditevent SET reason = 'nothing to see' WHERE id = %s", [made[2].pk])
    code, _, err = verify_cli()
    assert code == 1 and f"modified: seal 3: event #{made[2].pk} was changed after it was written" in err
    assert not AuditVerification.objects.latest().ok


def test_a_deleted_event_is_named(superuser_sql: Any) -> None:
    made = events(5)
    superuser_sql("DELETE FROM audit_auditevent WHERE id = %s", [made[1].pk])
    code, _, err = verify_cli()
    assert code == 1 and f"deleted: seal 2: event #{made[1].pk} was deleted" in err


def test_an_event_inserted_behind_the_portal_is_named_and_never_sealed(superuser_sql: Any) -> None:
    events(3)
    superuser_sql(
        """INSERT INTO audit_auditevent (occurred_at, actor_username, source, request_id, action, outcome,
           target_type, target_id, target_repr, changes, reason, metadata, user_agent, mac)
           VALUES (now(), 'mallory', 'web', 'x', 'grant.revoked', 'success', '', '', '', '{}', 'cover-up', '{}', '',
                   repeat('a', 64))"""
    )
    forged = AuditEvent.objects.get(actor_username="mallory")
    code, _, err = verify_cli()
    assert code == 1 and f"forged: event #{forged.pk} has no valid MAC (written behind the portal" in err
    assert not AuditSeal.objects.filter(event_id=forged.pk).exists()


def test_events_swapped_between_ids_are_named(superuser_sql: Any) -> None:
    """The MAC covers the id: an event moved to another id no longer matches its MAC."""
    made = events(4)
    a, b = made[1].pk, made[2].pk
    superuser_sql("UPDATE audit_auditevent SET id = -1 WHERE id = %s", [a])
    superuser_sql("UPDATE audit_auditevent SET id = %s WHERE id = %s", [a, b])
    superuser_sql("UPDATE audit_auditevent SET id = %s WHERE id = -1", [b])
    code, _, err = verify_cli()
    assert code == 1 and f"modified: seal 2: event #{a} was changed after it was written (its content or its id)" in err


def test_edited_or_deleted_seals_break_the_chain(superuser_sql: Any) -> None:
    events(5)
    superuser_sql("DELETE FROM audit_auditseal WHERE seq = 3")
    code, _, err = verify_cli("--no-seal")
    assert code == 1 and "gap: seals 3..3 are missing" in err and "chain_broken: seal 4" in err


def test_the_database_refuses_to_change_seals() -> None:
    events(1)
    from django.db import DatabaseError, transaction

    for sql in ("UPDATE audit_auditseal SET chain_mac = 'x'", "DELETE FROM audit_auditseal"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cur:
            cur.execute(sql)


@pytest.mark.parametrize("table", ["audit_auditevent", "audit_auditseal", "audit_auditarchive"])
def test_the_database_refuses_truncate_of_the_trail(table: str) -> None:
    """Row triggers never see TRUNCATE; a statement trigger does (migration audit/0008). The test
    suite's own flush gets through only because its backend switches triggers off for it."""
    from django.db import DatabaseError, transaction

    events(2)
    with pytest.raises(DatabaseError, match="append-only: TRUNCATE"), transaction.atomic(), connection.cursor() as cur:
        cur.execute(f"TRUNCATE {table} CASCADE")
    assert AuditEvent.objects.count() == 2 and AuditSeal.objects.count() == 2


def test_archive_checkpoints_are_append_only(tmp_path: Path) -> None:
    import time_machine
    from django.db import DatabaseError, transaction
    from django.utils import timezone

    with time_machine.travel(timezone.now() - dt.timedelta(days=400)):
        events(2)
    assert chain.archive(older_than=timezone.now() - dt.timedelta(days=365), folder=tmp_path) is not None
    for sql in ("UPDATE audit_auditarchive SET upto_seq = 1", "DELETE FROM audit_auditarchive"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cur:
            cur.execute(sql)


def test_checkpoints_are_signed_and_verification_checks_the_whole_trail_against_them(
    tmp_path: Path, superuser_sql: Any
) -> None:
    made = events(3)
    out = io.StringIO()
    call_command("audit_checkpoint", stdout=out)
    doc = json.loads(out.getvalue())
    assert doc["seq"] == 3 and doc["v"] == 2 and chain.checkpoint_valid(doc)
    path = tmp_path / "checkpoint.json"
    path.write_text(json.dumps(doc))
    later = events(2)
    code, out_text, _ = verify_cli("--checkpoint", str(path))
    assert code == 0 and "5 sealed events checked from genesis, head 5" in out_text and "1 anchor(s) hold" in out_text
    superuser_sql("UPDATE audit_auditevent SET action = 'x' WHERE id = %s", [later[0].pk])
    assert verify_cli("--checkpoint", str(path))[0] == 1
    path.write_text(json.dumps(doc | {"seq": 1}))  # a checkpoint edited by hand
    with pytest.raises(CommandError, match="signature does not match"):
        call_command("audit_verify", "--checkpoint", str(path))
    assert made  # (the events before the checkpoint are covered by test_anchors.py's tampering shapes)


def test_since_is_gone_it_only_ever_verified_part_of_the_trail() -> None:
    events(1)
    with pytest.raises(CommandError, match="unrecognized arguments: --since"):
        call_command("audit_verify", "--since", "2")


def test_concurrent_writers_and_sealers_neither_deadlock_nor_fork() -> None:
    """Four writer threads and two sealer threads at once: every event sealed exactly once, in one
    unbroken chain."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def write(n: int) -> None:
        try:
            for i in range(150):
                audit.record(action=f"test.thread_{n}", actor=None, metadata={"i": i})
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connections.close_all()

    def seal() -> None:
        try:
            while not stop.is_set():
                chain.seal_pending()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    sealers = [threading.Thread(target=seal) for _ in range(2)]
    for t in writers + sealers:
        t.start()
    for t in writers:
        t.join(60)
    stop.set()
    for t in sealers:
        t.join(60)
    assert not errors, errors
    chain.seal_pending(full=True)
    result = chain.verify()
    assert result.ok, result.problems
    assert result.checked == AuditEvent.objects.count() == 600
    assert AuditSeal.objects.values("event_id").distinct().count() == 600


def test_archiving_moves_old_events_to_a_file_and_verification_continues_from_its_checkpoint(
    tmp_path: Path, superuser_sql: Any
) -> None:
    import gzip

    import time_machine
    from django.utils import timezone

    with time_machine.travel(timezone.now() - dt.timedelta(days=400)):
        old = events(4)
    recent = events(2)
    out = io.StringIO()
    call_command("audit_archive", "--older-than", "365", "--to", str(tmp_path), stdout=out)
    assert "archived 4 events up to seal 4" in out.getvalue()
    files = list(tmp_path.glob("audit-*.jsonl.gz"))
    assert len(files) == 1
    lines = [json.loads(x) for x in gzip.decompress(files[0].read_bytes()).splitlines()]
    assert [x["event_id"] for x in lines] == [e.pk for e in old] and lines[0]["event"]["reason"] == "reason 0"
    assert not AuditEvent.objects.filter(pk__in=[e.pk for e in old]).exists()
    assert AuditEvent.objects.filter(action="audit.archived").exists()
    code, text, err = verify_cli()
    assert code == 0 and "3 sealed events checked from the archive checkpoint of seal 4, head 7" in text, err
    # Nothing else may delete events: the archive's permission is not a door left open.
    from django.db import DatabaseError
    from django.db import transaction as tx

    with pytest.raises(DatabaseError, match="append-only"), tx.atomic(), connection.cursor() as cur:
        cur.execute("DELETE FROM audit_auditevent WHERE id = %s", [recent[0].pk])
    # Tampering after the checkpoint is still found.
    superuser_sql("UPDATE audit_auditevent SET reason = 'x' WHERE id = %s", [recent[1].pk])
    assert verify_cli()[0] == 1
    assert "nothing to archive" in _archive_again(tmp_path)


def _archive_again(folder: Path) -> str:
    out = io.StringIO()
    call_command("audit_archive", "--older-than", "365", "--to", str(folder), stdout=out)
    return out.getvalue()


def test_the_periodic_verification_records_its_outcome(superuser_sql: Any) -> None:
    from audit.tasks import verify_audit_trail

    made = events(2)
    assert verify_audit_trail() is True and AuditVerification.objects.latest().ok
    superuser_sql("UPDATE audit_auditevent SET reason = 'x' WHERE id = %s", [made[0].pk])
    assert verify_audit_trail() is False
    latest = AuditVerification.objects.latest()
    assert not latest.ok and latest.problems[0]["kind"] == "modified"


def test_a_batch_written_by_copy_is_stored_exactly_as_save_would_store_it(analyst: Any) -> None:
    """record_many() writes with COPY's text format: separators, backslashes, NULLs, IPv6, JSON with
    quotes and non-ASCII must come back byte for byte, or the MACs (computed before the write) would
    not verify and the trail would look tampered with."""
    from django.db import transaction

    from audit.context import RequestContext, bind

    awkward = "tab\there\nnew line\\backslash \\N not null, quote \" and 'single', café ✓"
    ctx = RequestContext(request_id="req-1", source="api", ip="2001:db8::1", user_agent="agent\t1", user_id=analyst.pk)
    with bind(ctx):
        built = [
            audit.build(
                action="test.copy",
                actor=analyst,
                target_type="governance.grant",
                target_id=str(i),
                target_repr=awkward,
                changes={"note": [awkward, None], "level": ["read", "write"]},
                reason=awkward,
                metadata={"i": i, "nested": {"s": awkward, "list": [1, 2.5, True, None]}},
            )
            for i in range(3)
        ]
    built.append(audit.build(action="test.copy.system", actor=None))  # no actor, no IP: NULLs
    with transaction.atomic():
        saved = audit.record_many(built)
    assert [e.pk for e in saved] == sorted(e.pk for e in saved) and all(e.pk for e in saved)
    for event in saved:
        stored = AuditEvent.objects.get(pk=event.pk)
        for field in AuditEvent._meta.concrete_fields:
            assert getattr(stored, field.attname) == getattr(event, field.attname), field.name
        assert chain.event_mac(chain.row_of(stored), stored.pk) == stored.mac
    assert AuditEvent.objects.get(pk=saved[0].pk).ip_address == "2001:db8::1"
    assert AuditEvent.objects.get(pk=saved[-1].pk).ip_address is None
    assert chain.seal_pending(full=True).sealed == 4
    assert chain.verify().ok
    # And a later single write still gets a fresh id after the batch's.
    later = audit.record(action="test.after", actor=None)
    assert later.pk > saved[-1].pk


def test_the_canonical_form_and_mac_are_pinned() -> None:
    """Every stored MAC depends on these bytes: a change to the canonical form (or to a library it
    leans on) would make the whole existing trail look tampered with. Format 2 (the id first) was
    computed when it was introduced (migration audit/0007); format 1, computed by the first version
    of audit/chain.py, is what that migration and old checkpoints are checked with."""
    row: dict[str, Any] = {
        "occurred_at": dt.datetime(2026, 11, 24, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        "actor_id": 7,
        "actor_username": "ana",
        "source": "api",
        "ip_address": "2001:DB8:0:0::1",
        "user_agent": "curl/8",
        "request_id": "r-1",
        "action": "grant.revoked",
        "outcome": "success",
        "target_type": "governance.grant",
        "target_id": "42",
        "target_repr": "ana → ledger",
        "changes": '{"level": ["read", "write"]}',  # as a raw cursor returns jsonb
        "reason": "tab\there",
        "metadata": {"b": 1, "a": [True, None, 2.5]},
    }
    assert chain.canonical(dict(row), 123) == (
        b'[123,"2026-11-24T06:08:09.123456Z",7,"ana","api","2001:db8::1","curl/8","r-1","grant.revoked","success",'
        b'"governance.grant","42","ana \\u2192 ledger",{"level":["read","write"]},"tab\\there",'
        b'{"a":[true,null,2.5],"b":1}]'
    )
    assert (
        chain.event_mac(dict(row), 123, b"golden-key")
        == "537ac605ee90ebb64e5e203a2d4342aa8773dc59f4594fdd58b50fe07b230999"
    )
    assert chain.event_mac(dict(row), 124, b"golden-key") != chain.event_mac(dict(row), 123, b"golden-key")
    assert (
        chain.legacy_event_mac(dict(row), b"golden-key")
        == "ceb7902a4e6014ab8531063c788626964dbed5696f03cad13676b18e78ea1ab7"
    )
