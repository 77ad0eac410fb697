"""A JIT login connects to the governed database and to no other database of the cluster.

PUBLIC holds CONNECT on every database by default, so without more a login the portal creates could
connect to every database of the target cluster (the portal's own, in the `make run` layout). The
DBA revokes PUBLIC's CONNECT on every database as docs/security.md says; the portal grants CONNECT
on the governed database only, to the access packages, which the login inherits through its principal.
Everything here runs as in production: the portal role of docs/security.md over verify-full TLS, a
real worker, the real password revealed to the grantee.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from audit.models import AuditEvent
from governance.models import Dataset
from governance.provisioners import postgres as pg
from governance.provisioning import grant_principal, package_of
from governance.services import jit
from governance.services.reconcile import reconcile_source
from governance.services.sync import datasource_sync
from tests.provisioning.conftest import RUN, admin_connection, drop_test_roles, register_target, wait_for
from tests.provisioning.test_jit import WAREHOUSE_DDL, active, approve_jit, target_address
from tests.tls_target import TlsCluster

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]
DAYS = dt.timedelta(days=1)


def revoke_public_connect(database: str) -> None:
    """docs/security.md's step for the DBA, on one database: PUBLIC may no longer connect to it."""
    conn = admin_connection(database)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
    finally:
        conn.close()


def can_connect_directly(role: str, database: str) -> bool:
    """Whether `role` itself (not through a group) holds CONNECT on `database`."""
    conn = admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_database d, aclexplode(d.datacl) a JOIN pg_roles r"
                " ON r.oid = a.grantee WHERE d.datname = %s AND r.rolname = %s AND a.privilege_type = 'CONNECT')",
                (database, role),
            )
            row = cur.fetchone()
            return bool(row and row[0])
    finally:
        conn.close()


@pytest.fixture
def cluster_without_public_connect(target_server: TlsCluster, target_dbname: str) -> Iterator[tuple[str, str]]:
    """A governed database and another database of the same cluster, PUBLIC's CONNECT revoked on
    both (the portal's role keeps what the DBA granted it on the governed one). Dropped afterwards.
    Like `target_source`, it starts from no role of this run: roles are cluster-wide, and a JIT login
    an earlier test left is a leftover the reconciler reports."""
    drop_test_roles(target_dbname)
    governed, other = f"gov_cg_{RUN}", f"gov_co_{RUN}"
    target_server.create_database(governed, WAREHOUSE_DDL)
    root = admin_connection()
    with root.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(other)))
    for database in (governed, other):
        revoke_public_connect(database)
    try:
        yield governed, other
    finally:
        pg.POOL.close_all()
        with root.cursor() as cur:
            for database in (governed, other):
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        root.close()


def test_a_jit_login_connects_to_the_governed_database_and_to_no_other(
    cluster_without_public_connect: tuple[str, str], classifications: Any, analyst: Any, owner: Any
) -> None:
    governed, other = cluster_without_public_connect
    source = register_target(f"cx_{RUN}", governed, owner=owner, default_classification=classifications["internal"])
    datasource_sync(source=source)
    ds = Dataset.objects.get(source=source, schema="sales", name="orders")
    grant = approve_jit(analyst, owner, ds)
    wait_for(lambda: active(grant), timeout=30)
    password = jit.grant_jit_credentials_reveal(grant=grant, actor=analyst)
    login = {"user": grant.jit_role, "password": password, **target_address()}

    # The governed database: the login gets in (CONNECT inherited, through its principal, from the
    # grant's access package) and reads.
    session = psycopg2.connect(dbname=governed, **login)
    try:
        with session.cursor() as cur:
            cur.execute("SELECT count(*) FROM sales.orders")
            assert cur.fetchone() == (2,)
    finally:
        session.close()

    # Another database of the cluster: refused, although the password is right.
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        psycopg2.connect(dbname=other, **login).close()

    # What the portal granted: CONNECT to the access package on the governed database, nothing to
    # the person's principal or the login itself (so that dropping the login needs no REVOKE, and
    # the database's ACL grows with packages, not people), nothing anywhere else.
    package = package_of(ds, grant.level, grant.columns).name
    principal = grant_principal(grant).db_role
    assert can_connect_directly(package, governed)
    assert not can_connect_directly(package, other)
    assert not can_connect_directly(principal, governed)
    assert not can_connect_directly(grant.jit_role, governed)


def test_without_the_portals_grant_the_login_would_be_locked_out(
    cluster_without_public_connect: tuple[str, str], classifications: Any, analyst: Any, owner: Any
) -> None:
    """The grant above is what lets the login in: take it away (as the portal's role, which granted
    it) and the same login is refused on the governed database too."""
    governed, _ = cluster_without_public_connect
    source = register_target(f"cx_{RUN}", governed, owner=owner, default_classification=classifications["internal"])
    datasource_sync(source=source)
    ds = Dataset.objects.get(source=source, schema="sales", name="orders")
    grant = approve_jit(analyst, owner, ds)
    wait_for(lambda: active(grant), timeout=30)
    password = jit.grant_jit_credentials_reveal(grant=grant, actor=analyst)
    package = package_of(ds, grant.level, grant.columns).name
    conn = admin_connection(governed)
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(source.username)))
            cur.execute(
                sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
                    sql.Identifier(governed), sql.Identifier(package)
                )
            )
            cur.execute("RESET ROLE")
    finally:
        conn.close()
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        psycopg2.connect(dbname=governed, user=grant.jit_role, password=password, **target_address()).close()


def test_reconcile_reports_the_databases_public_may_still_connect_to(
    cluster_without_public_connect: tuple[str, str], classifications: Any, owner: Any
) -> None:
    """A posture warning, not a drift finding: no grant repairs it, the DBA must act."""
    governed, other = cluster_without_public_connect
    source = register_target(f"cx_{RUN}", governed, owner=owner, default_classification=classifications["internal"])
    result = reconcile_source(source=source)
    assert result.clean and len(result.posture) == 1, result.posture
    (warning,) = result.posture
    assert warning.startswith("PUBLIC may connect to database(s) ") and "docs/security.md" in warning
    named = warning.removeprefix("PUBLIC may connect to database(s) ").split(":")[0].split(", ")
    assert "postgres" in named and governed not in named and other not in named
    assert "1 posture warning(s)" in result.summary()
    run = AuditEvent.objects.get(action="reconcile.run", target_id=str(source.pk))
    assert run.metadata["posture"] == result.posture
