"""Revocation that really revokes (issue 15): a revoked JIT login loses its open sessions, what it
owns and its role, verified; a classification can end a grantee's sessions on revoke; the reconciler
finds and repairs leftover logins and a hand-edited VALID UNTIL.

Everything runs against the TLS target cluster as the least-privileged portal role, with a real
worker; the sessions are real psycopg2 connections logged in with the revealed password.
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from audit.models import AuditEvent, Outcome
from governance.models import Dataset, DriftFinding, DriftResolution, Grant, JobStatus, ProvisioningJob, SourcePrincipal
from governance.provisioning import grant_principal
from governance.services import jit
from governance.services.classifications import classification_update
from governance.services.grants import grant_revoke
from governance.services.reconcile import reconcile_source
from governance.services.requests import access_request_approve, access_request_submit
from tests.provisioning.conftest import ROLE_PREFIX, RUN, admin_connection, dba, target_can, wait_for
from tests.provisioning.test_jit import DAYS, active, approve_jit, revoke_done, role_row, target_address

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]
SESSION_LOST = (psycopg2.OperationalError, psycopg2.InterfaceError)


def one(dbname: str, query: str, params: Any = None) -> Any:
    conn = admin_connection(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchone()[0]
    finally:
        conn.close()


def login(dbname: str, user: str, password: str) -> Any:
    conn = psycopg2.connect(dbname=dbname, user=user, password=password, **target_address())
    conn.autocommit = True
    return conn


class LongQuery:
    """``SELECT pg_sleep(60)`` in a thread on its own session; records how it ended."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(60)")
        except psycopg2.Error as exc:
            self.error = exc

    def running(self, dbname: str, user: str) -> bool:
        query = "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND query LIKE 'SELECT pg_sleep%%'"
        return bool(one(dbname, query, [user]))


def oid_of(dbname: str, name: str) -> int:
    return int(one(dbname, "SELECT oid FROM pg_roles WHERE rolname = %s", [name]))


def leftovers(dbname: str, oid: int) -> tuple[int, int, int]:
    """(roles, sessions, shared dependencies) of the role that had ``oid``."""
    return (
        one(dbname, "SELECT count(*) FROM pg_roles WHERE oid = %s", [oid]),
        one(dbname, "SELECT count(*) FROM pg_stat_activity WHERE usesysid = %s", [oid]),
        one(
            dbname, "SELECT count(*) FROM pg_shdepend WHERE refclassid = 'pg_authid'::regclass AND refobjid = %s", [oid]
        ),
    )


def dead(conn: Any) -> bool:
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    except SESSION_LOST:
        return True
    return False


# ---------------------------------------------------------------------------------------------
# Revoking a JIT login
# ---------------------------------------------------------------------------------------------


def test_revoke_ends_the_logins_sessions_drops_what_it_owns_and_verifies(target_source, analyst, owner):
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    grant = approve_jit(analyst, owner, ds)
    wait_for(lambda: active(grant))
    db, name = target_source.database, grant.jit_role
    principal = grant_principal(grant).db_role
    sandbox = f"sandbox_{RUN}"
    # A DBA gave the person a sandbox schema; their temporary login copies data into it.
    dba(
        db,
        sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(sandbox)),
        sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(sql.Identifier(sandbox), sql.Identifier(principal)),
    )
    try:
        password = jit.grant_jit_credentials_reveal(grant=grant, actor=analyst)
        idle = login(db, name, password)
        with idle.cursor() as cur:
            cur.execute(sql.SQL("CREATE TABLE {}.copy AS SELECT * FROM finance.ledger").format(sql.Identifier(sandbox)))
        busy = LongQuery(login(db, name, password))
        wait_for(lambda: busy.running(db, name))
        oid = oid_of(db, name)
        assert leftovers(db, oid)[1:] == (2, 1)  # two sessions, one owned table

        grant_revoke(grant=grant, actor=owner, reason="close done")
        wait_for(lambda: revoke_done(grant))

        busy.thread.join(timeout=30)
        assert not busy.thread.is_alive() and isinstance(busy.error, SESSION_LOST), busy.error  # the query died
        assert dead(idle)
        assert leftovers(db, oid) == (0, 0, 0)  # no role, no session, nothing owned or held
        assert one(db, "SELECT to_regclass(%s)", [f"{sandbox}.copy"]) is None
        job = ProvisioningJob.objects.get(grant=grant, action="revoke")
        assert any(line.startswith(f'ALTER ROLE "{name}" NOLOGIN') for line in job.statements), job.statements
        assert f"-- terminated 2 session(s) of {name}" in job.statements
        assert any(line.startswith(f'DROP OWNED BY "{name}"') for line in job.statements)
        assert AuditEvent.objects.get(action="grant.jit_dropped", target_id=str(grant.pk)).reason == (
            "The grant was revoked."
        )
    finally:
        dba(db, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(sandbox)))


def test_a_login_kept_by_another_database_fails_the_revoke_with_a_clear_error(target_source, analyst, owner):
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    grant = approve_jit(analyst, owner, ds)
    wait_for(lambda: active(grant))
    db, name = target_source.database, grant.jit_role
    principal = grant_principal(grant).db_role
    table = f"kept_{RUN}"
    # Something in another database of the cluster belongs to the login: the portal cannot drop it there.
    dba(
        "postgres",
        sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(table)),
        sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table), sql.Identifier(name)),
    )
    try:
        grant_revoke(grant=grant, actor=owner, reason="close done")
        job = wait_for(
            lambda: ProvisioningJob.objects.filter(grant=grant, action="revoke", status=JobStatus.FAILED).first()
        )
        assert "cannot be dropped" in job.last_error and "1 owned object(s)" in job.last_error, job.last_error
        assert "database postgres" in job.last_error
        failed = AuditEvent.objects.get(action="grant.jit_drop_failed", target_id=str(grant.pk))
        assert failed.outcome == Outcome.FAILED and "DROP OWNED BY" in failed.reason
        assert (role_row(admin_connection(db), name) or (None,))[0] is False  # it cannot log in any more
        assert not target_can(db, principal, "SELECT 1 FROM finance.ledger")  # the table step still ran
    finally:
        dba("postgres", sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


# ---------------------------------------------------------------------------------------------
# A classification that ends the grantee's sessions on revoke
# ---------------------------------------------------------------------------------------------


def test_the_classification_option_ends_a_mapped_logins_running_query_on_revoke(
    target_source, analyst, owner, gov_admin, classifications
):
    db = target_source.database
    person_login = f"{ROLE_PREFIX}ana_login"
    dba(db, sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw-ana-1234'").format(sql.Identifier(person_login)))
    dba(db, sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db), sql.Identifier(person_login)))
    SourcePrincipal.objects.create(source=target_source, user=analyst, db_role=person_login, managed=False)
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    assert ds.classification.slug == "confidential" and classifications["restricted"].terminate_sessions_on_revoke
    classification_update(
        classification=ds.classification, actor=gov_admin, terminate_sessions_on_revoke=True, reason="tighten"
    )
    req = access_request_submit(requester=analyst, dataset=ds, justification="audit", duration=DAYS)
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    wait_for(lambda: active(grant))

    busy = LongQuery(login(db, person_login, "pw-ana-1234"))
    wait_for(lambda: busy.running(db, person_login))
    grant_revoke(grant=grant, actor=owner, reason="done")
    wait_for(lambda: revoke_done(grant))
    busy.thread.join(timeout=30)
    assert not busy.thread.is_alive() and isinstance(busy.error, SESSION_LOST), busy.error
    event = AuditEvent.objects.get(action="grant.sessions_terminated", target_id=str(grant.pk))
    assert event.metadata["count"] == 1 and event.metadata["principal"] == person_login
    # The person's own login stays: only its sessions ended, and it may log in again (without the data).
    again = login(db, person_login, "pw-ana-1234")
    with pytest.raises(psycopg2.errors.InsufficientPrivilege), again.cursor() as cur:
        cur.execute("SELECT * FROM finance.ledger")
    again.close()


def test_without_the_option_a_revoke_leaves_other_sessions_alone(target_source, analyst, owner):
    """The control: Confidential (off by default) revokes the privilege but ends no session."""
    db = target_source.database
    person_login = f"{ROLE_PREFIX}ana_login"
    dba(db, sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw-ana-1234'").format(sql.Identifier(person_login)))
    dba(db, sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db), sql.Identifier(person_login)))
    SourcePrincipal.objects.create(source=target_source, user=analyst, db_role=person_login, managed=False)
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    assert not ds.classification.terminate_sessions_on_revoke
    req = access_request_submit(requester=analyst, dataset=ds, justification="audit", duration=DAYS)
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    wait_for(lambda: active(grant))
    session = login(db, person_login, "pw-ana-1234")
    grant_revoke(grant=grant, actor=owner, reason="done")
    wait_for(lambda: revoke_done(grant))
    assert not dead(session)
    session.close()
    assert not AuditEvent.objects.filter(action="grant.sessions_terminated").exists()


# ---------------------------------------------------------------------------------------------
# Reconcile: leftover logins and a hand-edited VALID UNTIL
# ---------------------------------------------------------------------------------------------


def test_reconcile_finds_a_leftover_login_and_fix_ends_it(target_source):
    db = target_source.database
    ghost = f"{ROLE_PREFIX}j_ghost_999"
    ident = sql.Identifier(ghost)
    # Made behind the portal's back: a JIT-named login with a session and a table of its own.
    dba(
        db,
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'ghost-pw-1234'").format(ident),
        sql.SQL("CREATE TABLE finance.ghost_notes (id int)"),
        sql.SQL("ALTER TABLE finance.ghost_notes OWNER TO {}").format(ident),
    )
    session = login(db, ghost, "ghost-pw-1234")
    oid = oid_of(db, ghost)

    result = reconcile_source(source=target_source)
    assert result.lines() == [f"leftover login {ghost}: no grant in force explains it (can log in, 1 open session(s))"]
    finding = DriftFinding.objects.open().get(source=target_source, principal=ghost)
    assert finding.kind == "leftover_login" and finding.privilege == "LOGIN"

    result = reconcile_source(source=target_source, fix=True)
    assert result.fixed == 1 and not result.errors, result.errors
    assert dead(session)
    assert leftovers(db, oid) == (0, 0, 0)
    assert one(db, "SELECT to_regclass('finance.ghost_notes')") is None
    finding.refresh_from_db()
    assert finding.resolution == DriftResolution.FIXED
    fixed = AuditEvent.objects.get(action="drift.fixed", target_id=str(finding.pk))
    assert any(line.startswith(f'DROP ROLE IF EXISTS "{ghost}"') for line in fixed.metadata["sql"])
    assert reconcile_source(source=target_source).clean


def test_reconcile_finds_a_hand_edited_valid_until_and_fix_moves_it_back(target_source, analyst, owner):
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    grant = approve_jit(analyst, owner, ds)
    wait_for(lambda: active(grant))
    db, name = target_source.database, grant.jit_role
    password = jit.grant_jit_credentials_reveal(grant=grant, actor=analyst)
    dba(db, sql.SQL("ALTER ROLE {} VALID UNTIL 'infinity'").format(sql.Identifier(name)))

    result = reconcile_source(source=target_source)
    assert result.lines() == [f"login {name} is valid until infinity, its grant ends {grant.ends_at.isoformat()}"], (
        result.lines()
    )

    assert reconcile_source(source=target_source, fix=True).fixed == 1
    assert role_row(admin_connection(db), name) == (True, grant.ends_at)
    login(db, name, password).close()  # the password the grantee holds still works
    assert reconcile_source(source=target_source).clean
    assert DriftFinding.objects.get(principal=name).resolution == DriftResolution.FIXED


def test_reconcile_ends_the_login_of_an_ended_grant_whose_revoke_never_reached_the_target(
    target_source, analyst, owner
):
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    grant = approve_jit(analyst, owner, ds)
    wait_for(lambda: active(grant))
    # The grant ended in the portal, but the login is still there (e.g. restored from a backup).
    Grant.objects.filter(pk=grant.pk).update(status="revoked", revoked_at=grant.starts_at)
    result = reconcile_source(source=target_source, fix=True)
    assert [line for line in result.lines() if "leftover login" in line], result.lines()
    assert role_row(admin_connection(target_source.database), grant.jit_role) is None
    grant.refresh_from_db()
    assert grant.jit_dropped_at is not None and grant.jit_password_encrypted == ""
    assert AuditEvent.objects.get(action="grant.jit_dropped").reason == "The reconciler ended a leftover login."
