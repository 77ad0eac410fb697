"""MAC format 2: every event's MAC covers its id, so a copy under another id is not genuine.

Every event is MACed again (its id and fields) and every seal chained again over the new MACs, after
checking each event and link as format 1 had them. Run inside the migration's transaction, with the
append-only triggers lifted for it alone.

**A trail that is already broken is migrated anyway, with every break carried over as it was**: a
deploy is never blocked by old tampering, and the migration never launders it. An event whose
format-1 MAC does not match keeps its stored MAC (it still fails, as `modified` or `forged`); a seal
whose event MAC was not its event's keeps it (`reordered`); a deleted event's seal keeps its event
MAC (`deleted`); a link that did not follow the one before keeps its old chained MAC (`chain_broken`
at the same seal, and the links after it follow it as they did). What verified before verifies
after; what failed fails the same way. The findings are recorded as an *Audit verification* row and,
with counts, as an `audit.mac_format_migrated` event, and printed.

**Copies are not made genuine.** Format 1 did not cover the id, so an exact copy of a genuine event
under another id had a valid format-1 MAC, and the old sealer sealed such copies like any event.
MACing every valid event again would make each copy genuine at its own id. So before anything is
MACed again, the events that share their stored MAC with another event (an exact copy has the same
fields, so the same format-1 MAC) are found, and only the first of each group, by seal order then by
id, is treated as the original; the others keep their format-1 MAC and fail as they should: a sealed
copy as `modified` at its seal (its link is carried over like any seal's), an unsealed one as
`forged`. They are reported with the original they copy. Two limits, both failing closed or stated:
two genuine events identical to the microsecond in every field would be reported as a copy (they
cannot be told apart from one); and a copy of an event archived before this migration has no
original left in the database to be compared with, so it cannot be found here (the archive file
holds the original's line; an event whose `occurred_at` is older than the events around it is
the sign to look for).

One repair is made, because it is the old sealer's bug and not anyone's tampering: after an archive
that covered every seal, the old sealer started a new chain at seal 1 from genesis, below the archive
checkpoint, where verification never looked. When that chain verifies from genesis, it is renumbered
to continue from the archive checkpoint (seal upto + 1 onwards) and chained from its MAC.

Checkpoints taken before this migration hold format-1 chained MACs; `audit_verify --checkpoint`
still checks them, by recomputing the format-1 chain (audit/chain.py).
"""

import datetime as dt
import hmac
import json
import sys
import uuid

from django.db import migrations, models
from psycopg2.extras import execute_values

BATCH = 5_000
COLUMNS = (
    "e.occurred_at, e.actor_id, e.actor_username, e.source, e.ip_address, e.user_agent, e.request_id, "
    "e.action, e.outcome, e.target_type, e.target_id, e.target_repr, e.changes, e.reason, e.metadata"
)


def remac_and_rechain(apps, schema_editor):  # type: ignore[no-untyped-def]
    from audit import chain

    assert [c.strip().removeprefix("e.") for c in COLUMNS.split(",")] == list(chain.FIELDS)
    connection = schema_editor.connection
    with connection.cursor() as cur:
        cur.execute("SELECT EXISTS (SELECT 1 FROM audit_auditevent) OR EXISTS (SELECT 1 FROM audit_auditseal)")
        if not cur.fetchone()[0]:
            return  # a new installation: nothing to migrate
        cur.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        cur.execute("ALTER TABLE audit_auditseal DISABLE TRIGGER audit_seal_append_only")
    secret = chain.key()
    found = Findings()
    raw = connection.connection  # psycopg2: a named (server-side) cursor streams the trail
    with connection.cursor() as cur:
        cur.execute(
            "SELECT upto_seq, chain_mac, sha256, signature FROM audit_auditarchive ORDER BY upto_seq DESC LIMIT 1"
        )
        archived = cur.fetchone()
        cur.execute("SELECT min(seq) FROM audit_auditseal")
        lowest = cur.fetchone()[0]
    start_old = start_new = archived[1] if archived else chain.GENESIS
    shift = 0
    if archived and not hmac.compare_digest(archived[3], chain.archive_signature(archived[0], archived[1], archived[2])):
        found.add("chain_broken", f"the archive checkpoint of seal {archived[0]} is not signed with the audit key")
    if archived and lowest is not None and lowest <= archived[0]:
        if lowest == 1 and _chain_holds_from_genesis(raw, secret):
            start_old, shift = chain.GENESIS, archived[0]  # the old sealer's restart: renumber it
        else:
            found.add("archived", f"seals from {lowest} are at or below the archive checkpoint of seal {archived[0]}")

    copies = _copies(connection)

    # Seals in order, with their events: check as format 1, rewrite as format 2.
    walk = raw.cursor(name="audit_migrate_walk")
    walk.itersize = BATCH
    walk.execute(
        "SELECT s.seq, s.event_id, s.event_mac, s.chain_mac, e.id, e.mac, "  # noqa: S608
        + COLUMNS
        + " FROM audit_auditseal s LEFT JOIN audit_auditevent e ON e.id = s.event_id ORDER BY s.seq"
    )
    previous_old, previous_new, expected = start_old, start_new, None
    seals, events = [], []
    for row in walk:
        seq, event_id, sealed_mac, chained, found_id, mac = row[:6]
        if expected is not None and seq != expected:
            found.add("gap", f"seals {expected}..{seq - 1} are missing")
        new_sealed_mac = sealed_mac
        if found_id is None:
            found.add("deleted", f"seal {seq}: event #{event_id} was deleted")
        elif found_id in copies:  # keeps its format-1 MAC, and its seal keeps it too: `modified` here
            found.copy("modified", f"seal {seq}: event #{found_id} is a copy of event #{copies[found_id]}")
        elif _legacy_ok(mac, list(row[6:]), secret):
            new_mac = chain.event_mac(dict(zip(chain.FIELDS, row[6:], strict=True)), found_id, secret)
            events.append((found_id, new_mac))
            if sealed_mac == mac:
                new_sealed_mac = new_mac
            else:
                found.add("reordered", f"seal {seq}: event #{event_id} is not the event sealed under that id")
        else:
            found.add("modified", f"seal {seq}: event #{event_id} was changed after it was written")
        if hmac.compare_digest(chained, chain.chain_mac(previous_old, seq, event_id, sealed_mac, secret)):
            new_chained = chain.chain_mac(previous_new, seq + shift, event_id, new_sealed_mac, secret)
        else:
            found.add("chain_broken", f"seal {seq}: chained MAC does not follow seal {seq - 1}")
            new_chained = chained  # still does not follow: the break stays where it was
        seals.append((seq, seq + shift, new_sealed_mac, new_chained))
        previous_old, previous_new, expected = chained, new_chained, seq + 1
        found.seals += 1
        if len(seals) >= BATCH:
            _write(connection, seals, events)
            seals, events = [], []
    walk.close()
    _write(connection, seals, events)
    if shift:
        with connection.cursor() as cur:
            cur.execute("UPDATE audit_auditseal SET seq = -seq WHERE seq > 0")  # two steps: the ranges may overlap
            cur.execute("UPDATE audit_auditseal SET seq = -seq + %s", [shift])

    # Events not sealed yet: MACed again when they verify, left as they are when they do not.
    unsealed = raw.cursor(name="audit_migrate_unsealed")
    unsealed.itersize = BATCH
    unsealed.execute(
        "SELECT e.id, e.mac, "  # noqa: S608
        + COLUMNS
        + " FROM audit_auditevent e WHERE NOT EXISTS (SELECT 1 FROM audit_auditseal s WHERE s.event_id = e.id)"
        " ORDER BY e.id"
    )
    events = []
    for row in unsealed:
        if row[0] in copies:
            found.copy("forged", f"event #{row[0]} is a copy of event #{copies[row[0]]}")
        elif _legacy_ok(row[1], list(row[2:]), secret):
            events.append((row[0], chain.event_mac(dict(zip(chain.FIELDS, row[2:], strict=True)), row[0], secret)))
        else:
            found.add("forged", f"event #{row[0]} has no valid MAC (written behind the portal)")
        if len(events) >= BATCH:
            _write(connection, [], events)
            events = []
    unsealed.close()
    _write(connection, [], events)
    with connection.cursor() as cur:
        cur.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")
        cur.execute("ALTER TABLE audit_auditseal ENABLE TRIGGER audit_seal_append_only")
    _record(apps, connection, found, shift, secret)


class Findings:
    def __init__(self) -> None:
        self.first: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self.seals = 0
        self.copies = 0

    def add(self, kind: str, message: str) -> None:
        self.first.setdefault(kind, message)
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def copy(self, kind: str, message: str) -> None:
        self.copies += 1
        self.add(kind, f"{message} under another id (format 1 did not cover the id): not MACed again")


def _copies(connection) -> dict[int, int]:  # type: ignore[no-untyped-def]
    """{copy's id: original's id} for the events whose stored MAC another event also has. The first
    of each group by seal order, then by id (unsealed last), is taken as the original: the sealer
    sealed in id order, so a copy drawn from the sequence later is sealed, if at all, after it.
    Either way one of two identical events is reported, so a copy is never laundered; which one is
    only a guess when an attacker chose a lower id for it."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT e.id, e.mac FROM audit_auditevent e LEFT JOIN audit_auditseal s ON s.event_id = e.id"
            " WHERE e.mac IN (SELECT mac FROM audit_auditevent WHERE mac <> '' GROUP BY mac HAVING count(*) > 1)"
            " ORDER BY e.mac, s.seq NULLS LAST, e.id"
        )
        rows = cur.fetchall()
    originals: dict[str, int] = {}
    copies: dict[int, int] = {}
    for event_id, mac in rows:
        original = originals.setdefault(mac, event_id)
        if original != event_id:
            copies[event_id] = original
    return copies


def _legacy_ok(mac, values, secret):  # type: ignore[no-untyped-def]
    from audit import chain

    if not mac:
        return False
    legacy = hmac.digest(secret, chain._ENCODE(chain._normalise(values)).encode(), "sha256").hex()
    return hmac.compare_digest(mac, legacy)


def _chain_holds_from_genesis(raw, secret) -> bool:  # type: ignore[no-untyped-def]
    """Do the live seals form one unbroken format-1 chain from genesis, starting at seal 1?"""
    from audit import chain

    cur = raw.cursor(name="audit_migrate_restart")
    cur.itersize = BATCH
    cur.execute("SELECT seq, event_id, event_mac, chain_mac FROM audit_auditseal ORDER BY seq")
    previous, expected, holds = chain.GENESIS, 1, True
    for seq, event_id, sealed_mac, chained in cur:
        if seq != expected or not hmac.compare_digest(chained, chain.chain_mac(previous, seq, event_id, sealed_mac, secret)):
            holds = False
            break
        previous, expected = chained, seq + 1
    cur.close()
    return holds


def _write(connection, seals, events) -> None:  # type: ignore[no-untyped-def]
    with connection.cursor() as cur:
        if seals:
            execute_values(
                cur.cursor,
                "UPDATE audit_auditseal s SET event_mac = v.event_mac, chain_mac = v.chain_mac"
                " FROM (VALUES %s) AS v(seq, new_seq, event_mac, chain_mac) WHERE s.seq = v.seq",
                seals,
                page_size=1_000,
            )
        if events:
            execute_values(
                cur.cursor,
                "UPDATE audit_auditevent e SET mac = v.mac FROM (VALUES %s) AS v(id, mac) WHERE e.id = v.id",
                events,
                page_size=1_000,
            )


def _record(apps, connection, found: Findings, shift: int, secret: bytes) -> None:  # type: ignore[no-untyped-def]
    """The migration's findings, where an operator looks: the admin's Audit verifications, the trail
    itself (sealed like any event by the next run of the sealer), and the migration's output."""
    from audit import chain

    now = dt.datetime.now(dt.UTC)
    problems = [{"kind": k, "seq": None, "event_id": None, "message": m} for k, m in found.first.items()]
    Verification = apps.get_model("audit", "AuditVerification")
    Verification.objects.create(
        started_at=now, finished_at=now, ok=not problems, checked=found.seals, problems=problems, sealed=0
    )
    metadata = {
        "seals": found.seals,
        "problems": found.counts,
        "copies_not_remaced": found.copies,
        "renumbered_after_archive": shift,
    }
    row = {
        "occurred_at": now,
        "actor_id": None,
        "actor_username": "",
        "source": "system",
        "ip_address": None,
        "user_agent": "migration audit.0007_mac_covers_the_id",
        "request_id": uuid.uuid4().hex,
        "action": "audit.mac_format_migrated",
        "outcome": "success",
        "target_type": "",
        "target_id": "",
        "target_repr": "",
        "changes": {},
        "reason": "event MACs now cover the event id (format 2); seals chained again over them",
        "metadata": metadata,
    }
    with connection.cursor() as cur:
        cur.execute("SELECT nextval(pg_get_serial_sequence('audit_auditevent', 'id'))")
        event_id = cur.fetchone()[0]
        mac = chain.event_mac(row, event_id, secret)
        cur.execute(
            "INSERT INTO audit_auditevent (id, occurred_at, actor_id, actor_username, source, ip_address, user_agent,"
            " request_id, action, outcome, target_type, target_id, target_repr, changes, reason, metadata, mac)"
            " VALUES (%s, %s, NULL, '', 'system', NULL, %s, %s, %s, 'success', '', '', '', '{}', %s, %s, %s)",
            [
                event_id,
                now,
                row["user_agent"],
                row["request_id"],
                row["action"],
                row["reason"],
                json.dumps(metadata),
                mac,
            ],
        )
    if problems:
        sys.stdout.write(
            "\n  audit trail: migrated with the problems it already had (kept as they were; see Audit verifications"
            " and run audit_verify):\n" + "".join(f"    {k}: {m}\n" for k, m in found.first.items())
        )


class Migration(migrations.Migration):
    dependencies = [("audit", "0006_archive")]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="mac",
            field=models.CharField(
                blank=True,
                help_text="HMAC-SHA256 of the event's id and fields (audit.chain); empty = not the portal's",
                max_length=64,
            ),
        ),
        migrations.RunPython(remac_and_rechain, migrations.RunPython.noop),
    ]
