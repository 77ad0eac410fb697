"""A real target database, a real Celery worker process on real Redis, for the provisioning tests.

The target is a second PostgreSQL cluster (tests/tls_target.py) reached over verify-full TLS as
a least-privileged portal role, never a superuser, exactly as docs/security.md asks of production.

The worker runs `celery -A config worker` as a subprocess against the pytest-django test database
(so tests that need it use `django_db(transaction=True)`: the worker only sees committed rows) and
Redis database 15 (config.settings.test), flushed before it starts. Target roles are cluster-wide,
so each run uses its own role prefix and drops every role it made at the end.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from django.conf import settings
from psycopg2 import sql

from tests import mail, slack, tls_target
from tests.observability.metrics import TOKEN as METRICS_TOKEN
from tests.processes import free_port
from tests.tls_target import TlsCluster

ROOT = Path(__file__).resolve().parents[2]
RUN = secrets.token_hex(3)
ROLE_PREFIX = f"gte{RUN}_"

TARGET_DDL = [
    'CREATE SCHEMA "Sales EU"',
    'CREATE TABLE "Sales EU".customers (id int PRIMARY KEY, full_name text, email text, country text)',
    "INSERT INTO \"Sales EU\".customers VALUES (1, 'Ada Lovelace', 'ada@example.com', 'UK')",
    "CREATE SCHEMA finance",
    "CREATE TABLE finance.ledger (id int PRIMARY KEY, account text, amount numeric)",
    "INSERT INTO finance.ledger VALUES (1, '4000', 12.5)",
    'CREATE TABLE finance."Order ""Lines""; DROP TABLE x; --" (line_id int, order_id int, amount numeric)',
    'INSERT INTO finance."Order ""Lines""; DROP TABLE x; --" VALUES (1, 1, 9.99)',
]


def admin_connection(dbname: str = "postgres") -> Any:
    """A superuser autocommit session on the target cluster: the tests' DBA, never the portal."""
    return tls_target.current().superuser(dbname)


def dba(dbname: str, *statements: Any) -> None:
    """Statements run in `dbname` by the target's superuser, one autocommit session."""
    conn = admin_connection(dbname)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


_CREATED: set[str] = set()


@pytest.fixture(scope="session")
def target_dbname(target_server: TlsCluster, django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    """A fresh target database with a mixed-case schema and a hostile table name."""
    name = f"gov_te_{RUN}"
    if name not in _CREATED:  # tests/identity/scim's conftest imports this fixture too: one database
        target_server.create_database(name, TARGET_DDL)
        _CREATED.add(name)
    yield name
    from governance.provisioners import postgres as pg

    pg.POOL.close_all()


def drop_test_roles(dbname: str) -> None:
    """Drop every role this run created (they are cluster-wide), after dropping what they own."""
    conn = admin_connection(dbname)
    with conn.cursor() as cur:
        cur.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", [ROLE_PREFIX + "%"])
        roles = [r[0] for r in cur.fetchall()]
        cur.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'"
            " AND has_schema_privilege(%s, oid, 'USAGE WITH GRANT OPTION')",
            [tls_target.PORTAL_ROLE],
        )
        schemas = [r[0] for r in cur.fetchall()]
        for role in roles:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role])
            # What the portal's role granted only it can revoke (a superuser revokes as the owner).
            cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(tls_target.PORTAL_ROLE)))
            for schema in schemas:
                args = (sql.Identifier(schema), sql.Identifier(role))
                cur.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {} CASCADE").format(*args))
                cur.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {} CASCADE").format(*args))
            # The CONNECT the portal gave its managed roles on the governed database.
            cur.execute(
                sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {} CASCADE").format(
                    sql.Identifier(dbname), sql.Identifier(role)
                )
            )
            cur.execute("RESET ROLE")
            cur.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        for role in roles:
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    conn.close()


def target_can(dbname: str, role: str, query: str | sql.Composable) -> bool:
    """Whether `role` can run `query` in the target: SET ROLE in a superuser session, then try."""
    conn = admin_connection(dbname)
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            except psycopg2.errors.InvalidParameterValue:  # the role does not exist (yet, or any more)
                return False
            try:
                cur.execute(query)
                return True
            except psycopg2.errors.InsufficientPrivilege:
                return False
    finally:
        conn.close()


def register_target(name: str, dbname: str, **fields: Any) -> Any:
    """A DataSource for a database of the target cluster, as the portal role over verify-full TLS."""
    from governance import crypto
    from governance.models import DataSource

    cluster = tls_target.current()
    source = DataSource.objects.create(
        name=name,
        host=cluster.host,
        port=cluster.port,
        database=dbname,
        username=cluster.portal_role,
        sslmode="verify-full",
        ssl_root_cert=cluster.ca_pem,
        role_prefix=ROLE_PREFIX,
        **fields,
    )
    DataSource.objects.filter(pk=source.pk).update(password_encrypted=crypto.encrypt(cluster.portal_password))
    source.refresh_from_db()
    return source


@pytest.fixture
def target_source(target_dbname: str, classifications: Any, owner: Any) -> Iterator[Any]:
    """A registered, synced DataSource for the target database, with provisioning on.

    The portal connects as the least-privileged role of docs/security.md over verify-full TLS.
    Target roles are cluster-wide and outlive the portal's per-test flush, so every test starts from
    none: privileges left by an earlier test must not make this one pass (or fail).
    """
    drop_test_roles(target_dbname)
    from django.db import connection

    from governance.services.sync import datasource_sync

    source = register_target(
        f"target_{RUN}", target_dbname, owner=owner, default_classification=classifications["confidential"]
    )
    assert not connection.in_atomic_block, "provisioning tests need django_db(transaction=True)"
    datasource_sync(source=source)
    yield source
    settle_jobs()


@pytest.fixture
def fresh_target(target_dbname: str, classifications: Any) -> Any:
    """The target database registered and never synced: its catalog is empty until a sync runs.
    No owner: the datasets a worker creates need no object permissions then (see Worker)."""
    return register_target(f"fresh_{RUN}", target_dbname)


@pytest.fixture
def source_row_held() -> Iterator[Any]:
    """`hold(source)`: lock the portal's row of a source FOR NO KEY UPDATE from another session.
    Starting an operation (its foreign key takes KEY SHARE) goes through, but a sync's write phase
    (which locks the source row FOR UPDATE) waits until the test calls `.rollback()` on the
    connection `hold` returns."""
    from django.db import connection

    from governance.models import DataSource

    keys = ("dbname", "database", "user", "password", "host", "port", "sslmode")
    params = {k: v for k, v in connection.get_connection_params().items() if k in keys}
    held = psycopg2.connect(**params)

    def hold(source: Any) -> Any:
        with held.cursor() as cur:
            cur.execute(f"SELECT 1 FROM {DataSource._meta.db_table} WHERE id = %s FOR NO KEY UPDATE", [source.pk])
        return held

    yield hold
    if not held.closed:
        held.rollback()
        held.close()


def settle_jobs(timeout: float = 30) -> None:
    """Let the worker finish what a test started before pytest-django empties the tables: a
    TRUNCATE racing a job's transaction can deadlock, and a failed flush leaks rows into the next
    test. Tests that break a target repair it before they end, so every job can finish. (A test
    that waits for an effect on the target, e.g. access gone, ends while the job that caused it is
    still recording its outcome.)"""
    from governance.models import JobStatus, ProvisioningJob

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not ProvisioningJob.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).exists():
            break
        time.sleep(0.05)
    time.sleep(0.2)  # the outcome transaction of the last job, and beat's one-second tasks, settle


class Worker:
    """A real `celery worker --beat` process on the test database and Redis db 15, restartable.

    It outlives the database flushes of transactional tests, which give content types and
    permissions new ids: what the worker looks up through guardian (object permissions) may be
    stale in it, never in production. Worker tests keep clear of that (tests/notifications)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.metrics_port = 0

    def env(self) -> dict[str, str]:
        db = settings.DATABASES["default"]
        user = db.get("USER") or ""
        auth = f"{user}:{db['PASSWORD']}@" if db.get("PASSWORD") else (f"{user}@" if user else "")
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}",
            "REDIS_URL": settings.REDIS_URL,
            "PROVISIONING_RETRY_BASE_SECONDS": "0.2",
            "PROVISIONING_RETRY_MAX_SECONDS": "1",
            "PROVISIONING_MAX_ATTEMPTS": "3",
            # Beat runs the expiry, the sweeper and the prober every second here (production: a
            # minute, 5 s, 2 s); a lost message is published again after 2 s (30 s), its further
            # duplicates back off up to 40 s apart (10 minutes), a dead worker's lease passes after
            # 3 s (20 s).
            "GRANT_EXPIRY_INTERVAL_SECONDS": "1",
            "PROVISIONING_SWEEP_INTERVAL_SECONDS": "1",
            "PROVISIONING_STUCK_AFTER_SECONDS": "2",
            "PROVISIONING_REPUBLISH_MAX_SECONDS": "40",
            "PROVISIONING_LEASE_SECONDS": "3",
            # A long operation whose worker stopped its heartbeat is failed after 3 s (60 s).
            "OPERATION_LEASE_SECONDS": "3",
            "PROVISIONING_PROBE_INTERVAL_SECONDS": "1",
            "PROVISIONING_PROBE_TIMEOUT_SECONDS": "2",
            "TARGET_LOCK_TIMEOUT_MS": "20000",
            # The reconcile tests call the service themselves; keep beat's run out of their way.
            "RECONCILE_INTERVAL_SECONDS": "3600",
            # The audit tests seal the chain themselves and count what they sealed; a session worker
            # still alive from an earlier test of the same xdist process must not seal under them.
            "AUDIT_SEAL_INTERVAL_SECONDS": "3600",
            # Tests sync their sources themselves; a scheduled sync must not race their changes.
            "CATALOG_SYNC_INTERVAL_SECONDS": "0",
            # Notifications go to the session's SMTP server (tests/mail.py); a claimed delivery's
            # lease passes after 3 s (60 s), the outbox is swept every second (10 s), retries back
            # off from 0.2 s up to 1 s.
            **mail_env(),
            **slack.env(),
            "NOTIFICATIONS_LEASE_SECONDS": "3",
            "EMAIL_TIMEOUT": "2",
            "SLACK_TIMEOUT_SECONDS": "2",
            "NOTIFICATIONS_SWEEP_INTERVAL_SECONDS": "1",
            "NOTIFICATIONS_RETRY_BASE_SECONDS": "0.2",
            "NOTIFICATIONS_RETRY_MAX_SECONDS": "1",
            "PORTAL_URL": "http://portal.test",
            # The worker's own /metrics (observability/exporter.py) on a port free in this xdist process.
            "WORKER_METRICS_PORT": str(self.metrics_port),
            "WORKER_METRICS_ADDRESS": "127.0.0.1",
            "METRICS_TOKEN": METRICS_TOKEN,
        }

    def start(self) -> None:
        self.starts += 1
        self.metrics_port = free_port()
        log_path = self.log_dir / f"worker-{self.starts}.log"
        self.log_path = log_path
        log = open(log_path, "wb")  # noqa: SIM115 - the child keeps writing to it
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--beat",
                "-Q",
                "celery,notifications",
                "--pool=solo",
                "--loglevel=INFO",
                "-n",
                f"test{RUN}-{id(self) % 10_000}-{self.starts}@%h",
                "-s",
                str(self.log_dir / "beat-schedule"),
            ],
            cwd=ROOT,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if b"ready." in log_path.read_bytes():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited at start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError("celery worker did not become ready in 30 s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the worker's whole process group (SIGKILL: no chance to ack, requeue or clean up)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


def mail_env() -> dict[str, str]:
    """The worker sends its emails to the session's SMTP server (started by the `celery_worker` fixture)."""
    server = mail.current()
    if server is None:
        return {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(server.port),
        "DEFAULT_FROM_EMAIL": "Portal <portal@portal.test>",
    }


def wait_for(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll until `check()` is truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


def finish_operation(operation_id: int, timeout: float = 30.0) -> Any:
    """Run a queued operation in this process, as the worker's task does; when a session worker
    (started by an earlier test) took its message first, wait for that worker to finish it."""
    from governance.models import Operation
    from governance.services.operations import operation_run

    operation_run(operation_id=operation_id)
    return wait_for(lambda: Operation.objects.filter(pk=operation_id, finished_at__isnull=False).first(), timeout)
