"""Reconciliation against a real target: out-of-band GRANT/REVOKE and forgotten revocations are found,
recorded, audited, and repaired by `--fix`; the portal-side cost does not grow with the grants."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from psycopg2 import sql

import governance.admin_drift  # noqa: F401 - registers the DriftFinding admin (until admin.py imports it)
from accounts.roles import REQUESTERS
from audit.models import AuditEvent, Outcome
from governance.models import (
    Dataset,
    DataSource,
    DriftFinding,
    DriftKind,
    DriftResolution,
    Grant,
    GrantStatus,
    JobAction,
    JobStatus,
    Operation,
    ProvisioningJob,
    RoleMembership,
    SourcePrincipal,
)
from governance.provisioners import postgres as pg
from governance.provisioning import grant_principal, package_of, principal_for
from governance.services.reconcile import ReconcileResult, reconcile_source
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.roles import role_create, role_member_add
from governance.tasks import reconcile_sources
from tests import tls_target
from tests.provisioning.conftest import (
    ROLE_PREFIX,
    admin_connection,
    drop_test_roles,
    finish_operation,
    target_can,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]
DAYS = dt.timedelta(days=1)
LEDGER = "SELECT * FROM finance.ledger"


@pytest.fixture(autouse=True)
def clean_target(target_source: DataSource) -> Iterator[None]:
    """Target roles are cluster-wide and outlive the portal's per-test flush: start every test from
    roles that hold nothing, so that leftovers of other tests are not reported as drift here."""
    drop_test_roles(target_source.database)
    yield
    run_sql(target_source, 'DROP TABLE IF EXISTS finance."scratch"', as_dba=True)


def run_sql(source: DataSource, statement: str | sql.Composable, *, as_dba: bool = False) -> None:
    """Act behind the portal's back, in psql, autocommit.

    By default through the portal's own login (someone holding the service account's password):
    the least-privileged portal role can take back only what was granted on its authority, so these
    are the out-of-band changes `--fix` can repair. ``as_dba``: as the target's superuser, for DDL
    and for grants made on the table owner's authority, which the portal reports but cannot revoke.
    """
    conn = admin_connection(source.database)
    try:
        with conn.cursor() as cur:
            if not as_dba:
                cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(tls_target.current().portal_role)))
            cur.execute(statement)
    finally:
        conn.close()


def role_exists(source: DataSource, name: str) -> bool:
    conn = admin_connection(source.database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s)", [name])
            return bool(cur.fetchone()[0])
    finally:
        conn.close()


def approve_read(requester: Any, approver: Any, ds: Dataset) -> Grant:
    req = access_request_submit(requester=requester, dataset=ds, justification="month-end close", duration=7 * DAYS)
    access_request_approve(access_request=req, approver=approver)
    grant = Grant.objects.get(source_request=req)
    wait_for(lambda: Grant.objects.get(pk=grant.pk).status == GrantStatus.ACTIVE)
    return grant


@pytest.fixture
def ledger_grant(target_source: DataSource, analyst: Any, owner: Any) -> tuple[Grant, str]:
    """The analyst's read grant on finance.ledger, provisioned by the real worker; and its role."""
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    grant = approve_read(analyst, owner, ds)
    role = grant_principal(grant).db_role
    assert target_can(target_source.database, role, LEDGER)
    return grant, role


def reconcile_cmd(source: DataSource, *extra: str) -> tuple[int, str]:
    """`manage.py reconcile --source NAME ...`: (exit status, stdout)."""
    out = StringIO()
    try:
        call_command("reconcile", "--source", source.name, *extra, stdout=out, stderr=StringIO())
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def events(action: str, result: ReconcileResult) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, metadata__run=str(result.run_id)))


def test_out_of_band_grant_is_unexpected_and_fix_revokes_it(target_source, ledger_grant, gov_admin):
    grant, role = ledger_grant
    run_sql(target_source, sql.SQL("GRANT UPDATE ON finance.ledger TO {}").format(sql.Identifier(role)))

    result = reconcile_source(source=target_source)
    assert result.counts == {
        "missing": 0,
        "unexpected": 1,
        "expired_but_present": 0,
        "leftover_login": 0,
        "login_expiry": 0,
        "direct": 0,
        "orphan_package": 0,
        "view_differs": 0,
    }
    assert not result.clean and result.opened == 1
    assert result.lines() == [f"unexpected UPDATE on finance.ledger for {role}"]
    finding = DriftFinding.objects.get()
    assert (finding.kind, finding.privilege, finding.principal) == (DriftKind.UNEXPECTED, "UPDATE", role)
    assert finding.dataset == grant.dataset and finding.is_open and finding.run_id == result.run_id
    (run,) = events("reconcile.run", result)
    assert run.metadata["counts"]["unexpected"] == 1 and run.outcome == Outcome.SUCCESS
    assert [e.target_id for e in events("drift.found", result)] == [str(finding.pk)]

    # Reported again by the command (exit 1), without a duplicate finding.
    status, out = reconcile_cmd(target_source)
    assert status == 1 and f"unexpected UPDATE on finance.ledger for {role}" in out
    assert DriftFinding.objects.count() == 1

    status, out = reconcile_cmd(target_source, "--fix")
    assert status == 0, out
    assert "[fixed]" in out and "clean" in out
    assert target_can(target_source.database, role, LEDGER)
    assert not target_can(target_source.database, role, "UPDATE finance.ledger SET amount = 0")
    finding.refresh_from_db()
    assert finding.resolution == DriftResolution.FIXED and finding.resolved_at and finding.resolved_by is None
    fixed = AuditEvent.objects.get(action="drift.fixed", target_id=str(finding.pk))
    assert fixed.source == "cli" and any("REVOKE ALL ON TABLE" in s for s in fixed.metadata["sql"])

    # (d) nothing changed since: nothing found, exit status 0.
    status, out = reconcile_cmd(target_source)
    assert status == 0 and "0 drift" in out and "clean" in out
    assert reconcile_source(source=target_source, actor=gov_admin).clean


def test_a_grant_made_on_the_owners_authority_is_reported_with_who_must_revoke_it(target_source, ledger_grant):
    """The portal's role is no superuser: what the table owner granted, only the owner (or a
    superuser) can take back. `--fix` tries, fails cleanly, names the grantor, and leaves the
    finding open rather than calling it fixed."""
    _, role = ledger_grant
    run_sql(target_source, sql.SQL("GRANT UPDATE ON finance.ledger TO {}").format(sql.Identifier(role)), as_dba=True)

    status, out = reconcile_cmd(target_source, "--fix")
    assert status == 1, out
    assert "granted by postgres: the portal's role cannot revoke it; postgres or a superuser must" in out, out
    assert target_can(target_source.database, role, "UPDATE finance.ledger SET amount = amount")
    assert target_can(target_source.database, role, LEDGER)  # the approved access was left alone
    finding = DriftFinding.objects.get()
    assert finding.is_open and finding.privilege == "UPDATE"

    # Once the owner revokes it, the next run closes the finding as gone.
    run_sql(target_source, sql.SQL("REVOKE UPDATE ON finance.ledger FROM {}").format(sql.Identifier(role)), as_dba=True)
    status, out = reconcile_cmd(target_source)
    assert status == 0, out
    finding.refresh_from_db()
    assert not finding.is_open and finding.resolution == DriftResolution.GONE


def test_out_of_band_revoke_is_missing_and_fix_restores_it(target_source, ledger_grant):
    grant, role = ledger_grant
    # The role holds SELECT through its access package: taking the membership away by hand.
    package = package_of(grant.dataset, grant.level, grant.columns).name
    run_sql(target_source, sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(package), sql.Identifier(role)))
    assert not target_can(target_source.database, role, LEDGER)

    status, out = reconcile_cmd(target_source)
    assert status == 1 and f"missing SELECT on finance.ledger for {role}" in out
    finding = DriftFinding.objects.get()
    assert finding.kind == DriftKind.MISSING

    status, out = reconcile_cmd(target_source, "--fix")
    assert status == 0, out
    assert target_can(target_source.database, role, LEDGER)
    finding.refresh_from_db()
    assert finding.resolution == DriftResolution.FIXED
    assert AuditEvent.objects.filter(action="drift.fixed", target_id=str(finding.pk)).exists()


def test_drift_that_disappears_on_its_own_is_closed_as_gone(target_source, ledger_grant):
    _, role = ledger_grant
    run_sql(target_source, sql.SQL("GRANT DELETE ON finance.ledger TO {}").format(sql.Identifier(role)))
    assert reconcile_source(source=target_source).counts["unexpected"] == 1
    run_sql(target_source, sql.SQL("REVOKE DELETE ON finance.ledger FROM {}").format(sql.Identifier(role)))
    result = reconcile_source(source=target_source)
    assert result.clean and result.gone == 1
    finding = DriftFinding.objects.get()
    assert finding.resolution == DriftResolution.GONE and finding.resolved_at is not None


def test_expired_grant_still_present_is_found_and_revoked(target_source, ledger_grant):
    grant, role = ledger_grant
    # The grant ended but its revocation never reached the target (arranged: no revoke job at all).
    now = timezone.now()
    Grant.objects.filter(pk=grant.pk).update(
        status=GrantStatus.EXPIRED, starts_at=now - 2 * DAYS, ends_at=now - dt.timedelta(hours=1)
    )
    assert target_can(target_source.database, role, LEDGER)

    result = reconcile_source(source=target_source)
    assert result.counts == {
        "missing": 0,
        "unexpected": 0,
        "expired_but_present": 1,
        "leftover_login": 0,
        "login_expiry": 0,
        "direct": 0,
        "orphan_package": 1,  # no grant in force defines the grant's access package any more
        "view_differs": 0,
    }
    package = package_of(grant.dataset, grant.level, grant.columns).name
    assert result.lines() == [
        f"access package {package} is not defined by any grant in force",
        f"SELECT on finance.ledger still held by {role} after its grant ended",
    ]

    result = reconcile_source(source=target_source, fix=True)
    assert result.clean and result.fixed == 2 and result.opened == 0
    assert not target_can(target_source.database, role, LEDGER)
    assert set(DriftFinding.objects.values_list("resolution", flat=True)) == {DriftResolution.FIXED}
    assert not role_exists(target_source, package)  # dropped once its last member left


def test_grant_on_a_table_the_portal_does_not_govern_is_revoked(target_source, ledger_grant):
    _, role = ledger_grant
    run_sql(target_source, 'CREATE TABLE finance."scratch" (id int)', as_dba=True)
    run_sql(target_source, sql.SQL('GRANT SELECT, INSERT ON finance."scratch" TO {}').format(sql.Identifier(role)))

    result = reconcile_source(source=target_source)
    assert result.counts["unexpected"] == 2
    assert result.lines() == [
        f"unexpected SELECT on finance.scratch for {role} (table not in the catalog)",
        f"unexpected INSERT on finance.scratch for {role} (table not in the catalog)",
    ]
    assert set(DriftFinding.objects.values_list("dataset", flat=True)) == {None}

    status, out = reconcile_cmd(target_source, "--fix")
    assert status == 0, out
    assert not target_can(target_source.database, role, 'SELECT * FROM finance."scratch"')
    assert target_can(target_source.database, role, LEDGER)  # the governed grant is untouched
    assert DriftFinding.objects.filter(resolution=DriftResolution.FIXED).count() == 2


def test_mapped_login_role_is_compared_on_governed_tables_only(target_source, ledger_grant, make_user):
    """A person's own login role (managed=False) is theirs: only governed objects are compared."""
    person = make_user("dba_dora", REQUESTERS)
    login = f"{ROLE_PREFIX}dora_login"
    run_sql(target_source, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(login)), as_dba=True)
    SourcePrincipal.objects.create(source=target_source, user=person, db_role=login, managed=False)
    run_sql(target_source, 'CREATE TABLE finance."scratch" (id int)', as_dba=True)
    run_sql(target_source, sql.SQL('GRANT SELECT ON finance."scratch" TO {}').format(sql.Identifier(login)))
    run_sql(target_source, sql.SQL("GRANT SELECT ON finance.ledger TO {}").format(sql.Identifier(login)))

    result = reconcile_source(source=target_source)
    assert result.lines() == [f"unexpected SELECT on finance.ledger for {login}"]


def test_ownership_by_a_managed_role_is_reported_and_not_fixed_blindly(target_source, ledger_grant):
    _, role = ledger_grant
    run_sql(target_source, 'CREATE TABLE finance."scratch" (id int)', as_dba=True)
    run_sql(
        target_source, sql.SQL('ALTER TABLE finance."scratch" OWNER TO {}').format(sql.Identifier(role)), as_dba=True
    )
    run_sql(target_source, sql.SQL('GRANT SELECT ON finance."scratch" TO PUBLIC'), as_dba=True)  # makes relacl non-null

    result = reconcile_source(source=target_source, fix=True)
    assert result.lines() == [f"unexpected ownership of finance.scratch by {role} (table not in the catalog)"]
    assert not result.clean and len(result.errors) == 1 and "a DBA must change its owner" in result.errors[0]
    assert AuditEvent.objects.filter(action="drift.fix", outcome=Outcome.FAILED).count() == 1
    assert DriftFinding.objects.open().count() == 1
    run_sql(target_source, 'DROP TABLE finance."scratch"', as_dba=True)  # owned by a role the cleanup drops


def test_grant_awaiting_provisioning_is_left_to_the_engine(target_source, analyst, owner):
    """A grant in force still `approved` is in flight: the reconciler neither reports nor applies it
    (the job checks the approved plan digest first; the reconciler must not bypass that)."""
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    DataSource.objects.filter(pk=target_source.pk).update(provisioning_enabled=False)
    req = access_request_submit(requester=analyst, dataset=ds, justification="x", duration=DAYS)
    access_request_approve(access_request=req, approver=owner)  # recorded, no job
    DataSource.objects.filter(pk=target_source.pk).update(provisioning_enabled=True)
    target_source.refresh_from_db()
    result = reconcile_source(source=target_source, fix=True)
    assert result.clean and result.skipped == 1 and not result.drift
    conn = admin_connection(target_source.database)
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [grant_principal(req.grant).db_role])
        assert cur.fetchone() is None  # nothing was applied: the role was not even created
    conn.close()


def test_unknown_source_and_unreachable_target_are_one_line_errors(target_source):
    with pytest.raises(CommandError, match="Unknown data source 'nope'"):
        call_command("reconcile", "--source", "nope")
    down = DataSource.objects.create(
        name="down", host="127.0.0.1", port=1, database="x", username="x", sslmode="disable"
    )
    with pytest.raises(CommandError, match=r"^Reconcile failed for down: Cannot read down: cannot connect"):
        call_command("reconcile", "--source", "down", stdout=StringIO(), stderr=StringIO())
    failed = AuditEvent.objects.get(action="reconcile.run", outcome=Outcome.FAILED)
    assert failed.target_id == str(down.pk) and failed.source == "cli"


def test_scheduled_task_repairs_auto_fix_sources_and_survives_a_dead_one(target_source, ledger_grant):
    _, role = ledger_grant
    DataSource.objects.create(name="aaa_down", host="127.0.0.1", port=1, database="x", username="x")
    DataSource.objects.filter(pk=target_source.pk).update(auto_fix_drift=True)
    run_sql(target_source, sql.SQL("GRANT TRUNCATE ON finance.ledger TO {}").format(sql.Identifier(role)))

    out = reconcile_sources()  # run in-process: the same function beat schedules
    assert "cannot connect" in out["aaa_down"]["error"]
    assert out[target_source.name] == {"drift": 1, "remaining": 0}
    assert not target_can(target_source.database, role, "TRUNCATE finance.ledger")
    assert AuditEvent.objects.filter(action="reconcile.run", outcome=Outcome.FAILED, source="task").count() == 1
    assert AuditEvent.objects.filter(action="drift.fixed", source="task").count() == 1


def test_admin_changelist_and_reconcile_action(target_source, ledger_grant, client, superuser):
    _, role = ledger_grant
    run_sql(target_source, sql.SQL("GRANT UPDATE ON finance.ledger TO {}").format(sql.Identifier(role)))
    reconcile_source(source=target_source)
    client.force_login(superuser)
    url = reverse("admin:governance_driftfinding_changelist")
    page = client.get(url + "?state=open")
    assert page.status_code == 200
    assert f"unexpected UPDATE on finance.ledger for {role}" in page.content.decode()
    assert f"{target_source.name} (1 open)" in page.content.decode()
    finding = DriftFinding.objects.get()
    response = client.post(url, {"action": "reconcile_and_fix", "_selected_action": [finding.pk], "index": 0})
    assert response.status_code == 302  # to the operation's page: a worker runs it
    operation = Operation.objects.get(source=target_source)
    assert operation.kind == "reconcile" and operation.params == {"fix": True}
    assert finish_operation(operation.pk).state == "succeeded"
    assert "1 fixed" in client.get(response["Location"]).content.decode()
    finding.refresh_from_db()
    assert finding.resolution == DriftResolution.FIXED and finding.resolved_by == superuser
    assert not target_can(target_source.database, role, "UPDATE finance.ledger SET amount = 0")


def is_member(source: DataSource, member: str, group: str) -> bool:
    conn = admin_connection(source.database)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid "
                "JOIN pg_roles r ON r.oid = m.member WHERE g.rolname = %s AND r.rolname = %s)",
                [group, member],
            )
            return bool(cur.fetchone()[0])
    finally:
        conn.close()


def test_out_of_band_membership_is_unexpected_and_fix_revokes_it(target_source, ledger_grant):
    _, role = ledger_grant
    run_sql(target_source, sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(role)))

    result = reconcile_source(source=target_source)
    assert result.counts == {
        "missing": 0,
        "unexpected": 1,
        "expired_but_present": 0,
        "leftover_login": 0,
        "login_expiry": 0,
        "direct": 0,
        "orphan_package": 0,
        "view_differs": 0,
    }
    assert result.lines() == [f"unexpected membership of {role} in pg_read_all_data"]
    finding = DriftFinding.objects.get()
    assert (finding.kind, finding.principal, finding.privilege) == (DriftKind.UNEXPECTED, role, "MEMBER")
    assert (finding.object_schema, finding.object_name, finding.dataset) == ("", "pg_read_all_data", None)
    assert reconcile_source(source=target_source).opened == 0  # still open, not duplicated

    status, out = reconcile_cmd(target_source, "--fix")
    assert status == 0, out
    assert "[fixed]" in out and "clean" in out
    assert not is_member(target_source, role, "pg_read_all_data")
    assert target_can(target_source.database, role, LEDGER)  # its grant is untouched
    finding.refresh_from_db()
    assert finding.resolution == DriftResolution.FIXED
    fixed = AuditEvent.objects.get(action="drift.fixed", target_id=str(finding.pk))
    assert any(s.startswith(f'REVOKE "pg_read_all_data" FROM "{role}"') for s in fixed.metadata["sql"])
    assert reconcile_source(source=target_source).clean


def test_portal_membership_revoked_out_of_band_is_missing_and_fix_restores_it(target_source, analyst, owner, gov_admin):
    role = role_create(actor=gov_admin, name="Ledger readers")
    membership = role_member_add(role=role, user=analyst, actor=gov_admin)
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    req = access_request_submit(
        requester=analyst, dataset=ds, justification="close", duration=7 * DAYS, grantee_role=role
    )
    access_request_approve(access_request=req, approver=owner)
    wait_for(lambda: Grant.objects.get(source_request=req).status == GrantStatus.ACTIVE)
    wait_for(lambda: ProvisioningJob.objects.filter(action=JobAction.MEMBERSHIP, status=JobStatus.SUCCEEDED).exists())
    member = principal_for(source=target_source, user=analyst).db_role
    group = principal_for(source=target_source, role=role).db_role
    assert is_member(target_source, member, group)
    assert reconcile_source(source=target_source).clean

    run_sql(target_source, sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), sql.Identifier(member)))
    result = reconcile_source(source=target_source)
    assert result.lines() == [f"missing membership of {member} in {group}"]
    assert DriftFinding.objects.get().kind == DriftKind.MISSING

    result = reconcile_source(source=target_source, fix=True)
    assert result.clean and result.fixed == 1, result.errors
    assert is_member(target_source, member, group)
    assert target_can(target_source.database, member, LEDGER)
    assert DriftFinding.objects.get().resolution == DriftResolution.FIXED

    # The membership ends in the portal but its removal never reaches the target (no job queued).
    RoleMembership.objects.filter(pk=membership.pk).update(removed_at=timezone.now())
    result = reconcile_source(source=target_source)
    assert result.lines() == [f"unexpected membership of {member} in {group}"]
    result = reconcile_source(source=target_source, fix=True)
    assert result.clean and result.fixed == 1, result.errors
    assert not is_member(target_source, member, group)
    assert not target_can(target_source.database, member, LEDGER)


class CountingCursor:
    """Counts the statements a target cursor executes (observe() uses a named, streaming cursor)."""

    def __init__(self, cur: Any, log: list[str]) -> None:
        object.__setattr__(self, "_cur", cur)
        object.__setattr__(self, "_log", log)

    def execute(self, query: Any, params: Any = None) -> Any:
        self._log.append(str(query)[:60])
        return self._cur.execute(query, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._cur, name, value)

    def __iter__(self) -> Any:
        return iter(self._cur)

    def __enter__(self) -> CountingCursor:
        self._cur.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._cur.__exit__(*exc)


class CountingConnection:
    def __init__(self, conn: Any, log: list[str]) -> None:
        self._conn = conn
        self._log = log

    def cursor(self, *args: Any, **kwargs: Any) -> CountingCursor:
        return CountingCursor(self._conn.cursor(*args, **kwargs), self._log)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_cost_does_not_grow_with_the_number_of_grants(target_source, owner, make_user, monkeypatch):
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    people = [make_user(f"reader{i}", REQUESTERS) for i in range(8)]
    target_log: list[str] = []
    real_get = pg.POOL.get
    monkeypatch.setattr(pg.POOL, "get", lambda target: CountingConnection(real_get(target), target_log))

    def measure() -> tuple[int, float]:
        reconcile_source(source=target_source)  # warm (connection, first audit event)
        target_log.clear()
        with CaptureQueriesContext(connection) as portal:
            started = time.perf_counter()
            result = reconcile_source(source=target_source)
            elapsed = (time.perf_counter() - started) * 1000
        assert result.clean, result.lines()
        # Privileges, owners, the JIT login roles (governance/services/reconcile/jit.py), CONNECT posture.
        assert len(target_log) <= 4, target_log
        return len(portal.captured_queries), elapsed

    for person in people[:2]:
        approve_read(person, owner, ds)
    with_two, ms_two = measure()
    for person in people[2:]:
        approve_read(person, owner, ds)
    with_eight, ms_eight = measure()
    assert with_two == with_eight
    print(
        f"\nreconcile: {with_eight} portal queries, target statements {target_log}; {ms_two:.1f} ms (2 grants), "
        f"{ms_eight:.1f} ms (8 grants)"
    )
