"""CONNECT on the governed database, and on no other: the statement the plans carry for managed roles.

PUBLIC holds CONNECT on every database by default; docs/security.md has the DBA revoke it. Then a
role connects only where CONNECT was granted to it (or to a role it inherits from), and the portal
grants its managed roles CONNECT on the governed database only. The end-to-end proof, a JIT login
that connects to the governed database and to no other, is tests/provisioning/test_database_connect.py.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator

import pytest
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from governance.provisioners import postgres as pg
from tests import tls_target

from .conftest import SALES, Warehouse, admin_connection, target_for

READ = pg.privileges_for_level("read", server_version_num=150000)


def connect_grantees(database: str) -> set[str]:
    """Roles holding CONNECT on `database` directly (PUBLIC included, as 'PUBLIC')."""
    conn = admin_connection()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT coalesce(r.rolname, 'PUBLIC') FROM pg_database d,"
                " aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a"
                " LEFT JOIN pg_roles r ON r.oid = a.grantee"
                " WHERE d.datname = %s AND a.privilege_type = 'CONNECT'",
                (database,),
            )
            return {row[0] for row in cur.fetchall()}
    finally:
        conn.close()


@pytest.fixture
def bare_database(warehouse: Warehouse) -> Iterator[str]:
    """Another database of the cluster, where the portal's role holds CONNECT without GRANT OPTION
    (a DBA who followed the docs from before the portal granted CONNECT)."""
    name = f"gov_tpc_{secrets.token_hex(4)}"
    root = admin_connection()
    try:
        with root.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            cur.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(name), sql.Identifier(tls_target.PORTAL_ROLE)
                )
            )
        yield name
    finally:
        pg.POOL.close_all()
        with root.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        root.close()


def test_a_managed_roles_plan_ends_with_connect_on_the_governed_database(
    warehouse: Warehouse, role_name: Callable[[str], str]
) -> None:
    role = role_name("reader")
    desired = pg.Desired.union(role, SALES, READ)
    lines = pg.plan_converge(desired, managed_principal=True, database=warehouse.name).lines
    assert lines[0].startswith(f'CREATE ROLE "{role}" NOLOGIN')
    assert lines[-1] == (
        f'GRANT CONNECT ON DATABASE "{warehouse.name}" TO "{role}"  -- only if {role} lacks CONNECT on database '
        f"{warehouse.name} and the portal may grant it"
    )
    # An existing login the portal does not manage is never granted CONNECT: its DBA decides.
    unmanaged = pg.plan_converge(desired, managed_principal=False, database=warehouse.name).lines
    assert not any("CONNECT" in line for line in unmanaged)
    # Without a database the plan is what it was before (callers that do not name one).
    assert not any("CONNECT" in line for line in pg.plan_converge(desired, managed_principal=True).lines)


def test_applying_grants_connect_once_and_on_that_database_only(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    role = role_name("reader")
    plan = pg.plan_converge(pg.Desired.union(role, SALES, READ), managed_principal=True, database=warehouse.name)
    first = pg.apply(conn, plan, lock_key="test:connect")
    assert any(line.startswith("GRANT CONNECT") for line in first.statements), first
    assert role in connect_grantees(warehouse.name)
    assert role not in connect_grantees("postgres")
    again = pg.apply(conn, plan, lock_key="test:connect")  # converged: the guard skips it
    assert any(line.startswith("GRANT CONNECT") for line in again.skipped), again
    assert not any(line.startswith("GRANT CONNECT") for line in again.statements)


def test_ensure_role_also_grants_connect(
    warehouse: Warehouse, conn: PgConnection, role_name: Callable[[str], str]
) -> None:
    role = role_name("group")
    pg.apply(conn, pg.plan_ensure_role(role, database=warehouse.name), lock_key="test:connect")
    assert role in connect_grantees(warehouse.name)


def test_without_grant_option_the_grant_is_skipped_not_failed(
    bare_database: str, role_name: Callable[[str], str]
) -> None:
    """PostgreSQL would only warn ("no privileges were granted"); the plan says it skipped, and the
    reconciler's posture check reports the missing GRANT OPTION."""
    role = role_name("reader")
    conn = pg.connect(target_for(bare_database))
    try:
        result = pg.apply(conn, pg.plan_ensure_role(role, database=bare_database), lock_key="test:connect")
    finally:
        conn.close()
    assert any(line.startswith("GRANT CONNECT") for line in result.skipped), result
    assert role not in connect_grantees(bare_database)


def test_posture_names_the_databases_public_may_connect_to_and_a_missing_grant_option(
    warehouse: Warehouse, conn: PgConnection, bare_database: str
) -> None:
    (public,) = pg.connect_posture(conn)  # the portal may grant CONNECT on the warehouse
    assert public.startswith("PUBLIC may connect to database(s) ")
    assert warehouse.name in public and bare_database in public and "postgres" in public
    bare = pg.connect(target_for(bare_database))
    try:
        warnings = pg.connect_posture(bare)
    finally:
        bare.close()
    assert len(warnings) == 2 and f"may not pass on CONNECT to database {bare_database}" in warnings[1]


def test_a_combined_plan_grants_connect_last_so_the_database_lock_is_the_last_lock(
    warehouse: Warehouse, role_name: Callable[[str], str]
) -> None:
    """A batch's plan: every GRANT CONNECT moves to the end, each still after its CREATE ROLE."""
    a, b = role_name("a"), role_name("b")
    plans = [
        pg.plan_converge(pg.Desired.union(p, obj, READ), managed_principal=True, database=warehouse.name)
        for p, obj in ((a, SALES), (b, pg.ObjectRef("public", "x")))
    ]
    lines = pg.Plan.combine(plans).lines
    connects = [i for i, line in enumerate(lines) if line.startswith("GRANT CONNECT")]
    assert connects == [len(lines) - 2, len(lines) - 1], lines
    assert all(lines.index(next(x for x in lines if x.startswith(f'CREATE ROLE "{p}"'))) < connects[0] for p in (a, b))


def test_first_grants_of_many_principals_at_once_never_collide(
    warehouse: Warehouse, role_name: Callable[[str], str]
) -> None:
    """GRANT CONNECT rewrites the database's catalog row: without the database lock, two first
    grants at once fail with "tuple concurrently updated". Eight sessions, eight new principals."""
    roles = [role_name(f"first{i}") for i in range(8)]
    failures: list[BaseException] = []
    barrier = threading.Barrier(len(roles))

    def work(role: str) -> None:
        plan = pg.plan_ensure_role(role, database=warehouse.name)
        conn = warehouse.connect()
        try:
            barrier.wait()
            pg.apply(conn, plan, lock_key=f"role:{role}")
        except Exception as exc:  # noqa: BLE001 - collected and asserted on
            failures.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(role,)) for role in roles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [str(f) for f in failures] == []
    assert set(roles) <= connect_grantees(warehouse.name)
