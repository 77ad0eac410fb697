"""How the audit tests build a trail, tamper with it and ask `audit_verify` about it: one way, shared
by tests/audit/test_chain.py, tests/audit/test_anchors.py and tests/audit/test_format2_migration.py."""

from __future__ import annotations

import io
from typing import Any

from django.core.management import call_command
from django.db import connection

from audit import anchors, chain
from audit import services as audit
from audit.models import AuditEvent, AuditSeal
from tests.db import admin_connection

# An exact copy of an event under the next id of the table's sequence (the model's own column names).
COLUMNS = ", ".join(str(f.column) for f in AuditEvent._meta.concrete_fields if not f.primary_key)
COPY_EVENT = (
    f"INSERT INTO audit_auditevent (id, {COLUMNS}) SELECT nextval(pg_get_serial_sequence('audit_auditevent', 'id')), "
    f"{COLUMNS} FROM audit_auditevent WHERE id = %s"
)


class SuperuserSession:
    """A raw superuser session on the test database with triggers off, as a DBA (or whoever holds
    the database's keys) could open: `session_replication_role = replica` silences every trigger."""

    def __init__(self) -> None:
        self.conn = admin_connection(connection.settings_dict["NAME"])
        self.conn.autocommit = True
        self("SET session_replication_role = replica")

    def __call__(self, sql: str, params: list[Any] | tuple[Any, ...] | None = None) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql, params or [])

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params or [])
            return list(cur.fetchall())

    def close(self) -> None:
        self.conn.close()


def events(n: int) -> list[AuditEvent]:
    """n events written as services write them, then sealed.

    Sealed through the last of them, waiting for a sealer that holds the lock (the session's Celery
    worker seals too, and its beat writes events of its own): the call's own count may include
    others' events or miss ones another sealer took, so what is asserted is that these n are sealed."""
    made = [
        audit.record(action=f"test.event_{i}", actor=None, reason=f"reason {i}", metadata={"i": i, "pi": 3.14159})
        for i in range(n)
    ]
    if made:
        chain.seal_through(made[-1].pk)
    assert AuditSeal.objects.filter(event_id__in=[e.pk for e in made]).count() == n
    return made


def anchored() -> int:
    """Anchor the head to the configured witnesses until they hold it: the first anchor of a witness
    records an `audit.anchor_witness_started` event, which the next run seals and anchors. Returns
    the anchored head."""
    for _ in range(3):
        run = anchors.anchor_head()
        assert not run.problems, run.problems
        found, errors = anchors.read_latest()
        assert not errors, errors
        if found and all(a.seq == run.head for a in found) and chain.seal_pending(full=True).sealed == 0:
            return run.head
    raise AssertionError("the witnesses never caught up with the head")


def verify_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("audit_verify", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()
