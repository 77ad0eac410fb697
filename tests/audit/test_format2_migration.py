"""Migration audit/0007: a trail MACed and chained in format 1 (the fields without the id) is MACed
and chained again in format 2, and nothing changes about what verification says of it: an intact
trail stays intact, every break stays the same break, checkpoints taken before still check."""

from __future__ import annotations

import datetime as dt
import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import time_machine
from django.apps import apps
from django.db import connection, transaction
from django.utils import timezone

from audit import chain
from audit.models import AuditEvent, AuditSeal, AuditVerification
from tests.audit.trail import COPY_EVENT, SuperuserSession, events, verify_cli

pytestmark = pytest.mark.django_db(transaction=True)

MIGRATION = importlib.import_module("audit.migrations.0007_mac_covers_the_id")


def as_format_1(sql: SuperuserSession, *, start: str = chain.GENESIS, renumber_from: int | None = None) -> None:
    """Rewrite the trail as the portal wrote it before 0007: format-1 event MACs, and the seals
    chained over them (from `start`; numbered from `renumber_from` when given)."""
    secret = chain.key()
    for event in AuditEvent.objects.order_by("id"):
        sql(
            "UPDATE audit_auditevent SET mac = %s WHERE id = %s",
            [chain.legacy_event_mac(chain.row_of(event)), event.pk],
        )
    previous = start
    seals = list(AuditSeal.objects.order_by("seq"))
    if renumber_from is not None:
        sql("UPDATE audit_auditseal SET seq = -seq")
    for offset, seal in enumerate(seals):
        seq = seal.seq if renumber_from is None else renumber_from + offset
        mac = chain.legacy_event_mac(chain.row_of(AuditEvent.objects.get(pk=seal.event_id)), secret)
        previous = chain.chain_mac(previous, seq, seal.event_id, mac, secret)
        old = seal.seq if renumber_from is None else -seal.seq
        sql(
            "UPDATE audit_auditseal SET seq = %s, event_mac = %s, chain_mac = %s WHERE seq = %s",
            [seq, mac, previous, old],
        )


def migrate() -> None:
    with transaction.atomic():
        MIGRATION.remac_and_rechain(apps, SimpleNamespace(connection=connection))


def legacy_checkpoint(seq: int) -> dict[str, object]:
    doc: dict[str, object] = {
        "seq": seq,
        "chain_mac": AuditSeal.objects.get(seq=seq).chain_mac,
        "at": "2026-01-01T00:00:00.000000Z",
    }
    return doc | {"signature": chain.legacy_checkpoint_signature(doc)}


def test_an_intact_format_1_trail_migrates_intact_and_old_checkpoints_still_check(
    superuser_sql: SuperuserSession, tmp_path: Path
) -> None:
    made = events(5)
    as_format_1(superuser_sql)
    old = legacy_checkpoint(3)
    migrate()
    assert all(
        chain.event_mac(chain.row_of(e), e.pk) == e.mac for e in AuditEvent.objects.filter(pk__in=[m.pk for m in made])
    )
    run = AuditVerification.objects.latest()
    assert run.ok and run.checked == 5
    assert AuditEvent.objects.filter(action="audit.mac_format_migrated").exists()
    path = tmp_path / "old-checkpoint.json"
    path.write_text(json.dumps(old))
    code, out, err = verify_cli("--checkpoint", str(path))
    assert code == 0 and "1 anchor(s) hold" in out, err
    superuser_sql("UPDATE audit_auditevent SET reason = 'x' WHERE id = %s", [made[1].pk])
    code, _, err = verify_cli("--checkpoint", str(path))
    assert code == 1 and "anchor: checkpoint old-checkpoint.json anchored seal 3" in err and "(format 1)" in err, err


def test_a_broken_format_1_trail_keeps_every_break_where_it_was(superuser_sql: SuperuserSession) -> None:
    made = events(6)
    as_format_1(superuser_sql)
    superuser_sql("UPDATE audit_auditevent SET reason = 'nothing to see' WHERE id = %s", [made[1].pk])
    edited_mac = AuditEvent.objects.get(pk=made[1].pk).mac
    superuser_sql("DELETE FROM audit_auditevent WHERE id = %s", [made[3].pk])
    superuser_sql("UPDATE audit_auditseal SET chain_mac = %s WHERE seq = 5", ["c" * 64])
    migrate()
    run = AuditVerification.objects.latest()
    assert not run.ok and {p["kind"] for p in run.problems} == {"modified", "deleted", "chain_broken"}
    result = chain.verify()
    found = {(p.kind, p.seq) for p in result.problems}
    # Seal 5's chained MAC was overwritten, so neither its link nor seal 6's (which follows the value
    # seal 5 had) held before the migration: neither holds after it.
    assert found == {("modified", 2), ("deleted", 4), ("chain_broken", 5), ("chain_broken", 6)}, result.problems
    # The untouched events were MACed again; the edited one kept its format-1 MAC and still fails.
    assert AuditEvent.objects.get(pk=made[0].pk).mac == chain.event_mac(chain.row_of(made[0]), made[0].pk)
    assert AuditEvent.objects.get(pk=made[1].pk).mac == edited_mac


def test_the_old_sealers_restart_after_an_archive_is_renumbered_to_continue_from_it(
    superuser_sql: SuperuserSession, tmp_path: Path
) -> None:
    """Before 0007, after an archive that covered every seal, the sealer began again at seal 1 from
    genesis, where verification never looked. A chain like that which holds from genesis is moved
    to continue from the archive checkpoint."""
    with time_machine.travel(timezone.now() - dt.timedelta(days=400)):
        events(3)
    archived = chain.archive(older_than=timezone.now() - dt.timedelta(days=365), folder=tmp_path)
    chain.seal_pending(full=True)
    events(2)
    assert list(AuditSeal.objects.values_list("seq", flat=True)) == [4, 5, 6]
    as_format_1(superuser_sql, renumber_from=1)  # what the old sealer would have written
    assert list(AuditSeal.objects.values_list("seq", flat=True)) == [1, 2, 3]
    migrate()
    assert list(AuditSeal.objects.values_list("seq", flat=True)) == [4, 5, 6]
    result = chain.verify()
    assert result.ok and result.start_seq == archived.upto_seq, result.problems


def test_format_1_copies_of_an_event_under_other_ids_are_not_made_genuine(superuser_sql: SuperuserSession) -> None:
    """Format 1 did not cover the id: an exact copy of an event had a valid format-1 MAC, and the old
    sealer sealed it like any event. MACing it again would launder it. The first of identical events
    (by seal order, then id) is the original; the copies keep their format-1 MAC, so verification
    names them, and the migration reports them."""
    made = events(3)
    superuser_sql(COPY_EVENT, [made[1].pk])
    sealed_copy = AuditEvent.objects.order_by("-id").first()
    assert sealed_copy is not None
    superuser_sql(  # sealed by the old sealer (as_format_1 chains it with the others)
        "INSERT INTO audit_auditseal (seq, event_id, event_mac, chain_mac, sealed_at) VALUES (4, %s, '', '', now())",
        [sealed_copy.pk],
    )
    as_format_1(superuser_sql)
    superuser_sql(COPY_EVENT, [made[0].pk])  # copied later, not sealed yet
    unsealed_copy = AuditEvent.objects.order_by("-id").first()
    assert unsealed_copy is not None
    format_1 = {e.pk: e.mac for e in AuditEvent.objects.all()}
    assert format_1[sealed_copy.pk] == format_1[made[1].pk] and format_1[unsealed_copy.pk] == format_1[made[0].pk]
    migrate()
    for original in made:  # the originals are MACed again, the copies are not
        assert AuditEvent.objects.get(pk=original.pk).mac == chain.event_mac(chain.row_of(original), original.pk)
    assert AuditEvent.objects.get(pk=sealed_copy.pk).mac == format_1[sealed_copy.pk]
    assert AuditEvent.objects.get(pk=unsealed_copy.pk).mac == format_1[unsealed_copy.pk]
    run = AuditVerification.objects.latest()
    assert not run.ok and {p["kind"]: p["message"] for p in run.problems} == {
        "modified": f"seal 4: event #{sealed_copy.pk} is a copy of event #{made[1].pk} under another id "
        "(format 1 did not cover the id): not MACed again",
        "forged": f"event #{unsealed_copy.pk} is a copy of event #{made[0].pk} under another id "
        "(format 1 did not cover the id): not MACed again",
    }
    migrated = AuditEvent.objects.get(action="audit.mac_format_migrated")
    assert migrated.metadata["copies_not_remaced"] == 2
    result = chain.verify()
    found = {(p.kind, p.seq, p.event_id) for p in result.problems}
    assert found == {("modified", 4, sealed_copy.pk), ("forged", None, unsealed_copy.pk)}, result.problems
