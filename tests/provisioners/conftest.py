"""A real target for the PostgreSQL provisioner tests: the TLS cluster of tests/tls_target.py.

No Django database is used: the provisioner knows no ORM. The provisioner connects exactly as in
production: as the least-privileged portal role of docs/security.md (no superuser) over
``verify-full`` TLS. The tests arrange and inspect through the cluster's superuser.

* One scratch database ``gov_tp_<hex>`` per test session holds the tables, including a mixed-case
  schema ``Sales EU`` and a hostile table name; the portal role holds its privileges on them WITH
  GRANT OPTION, as the docs ask.
* Roles are cluster-wide, so every role a test makes (or makes the code under test make) starts
  with a per-run prefix ``gtp<hex>_``. At the end, every role with that prefix loses what it owns
  and holds in the scratch database and is dropped, also after failures.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from governance import crypto
from governance.provisioners import pg_packages as pgp
from governance.provisioners import postgres as pg
from tests import tls_target

RUN_PREFIX = f"gtp{secrets.token_hex(3)}_"

HOSTILE_SCHEMA = "Sales EU"
HOSTILE_TABLE = 'Order "Lines"; DROP TABLE x; --'
HOSTILE_COLUMN = 'Card "No"; --'
PERCENT_COLUMN = "50% off"
SALES = pg.ObjectRef("sales", "customers")
HOSTILE = pg.ObjectRef(HOSTILE_SCHEMA, HOSTILE_TABLE)
CUSTOMER_COLUMNS = ("id", "name", "email", "ssn", "country")
PII_COLUMNS = ("email", "ssn")


def server_params(dbname: str = "postgres") -> dict[str, Any]:
    """libpq keyword arguments of the target cluster's superuser (the tests' DBA)."""
    cluster = tls_target.current()
    return {
        "host": cluster.host,
        "port": cluster.port,
        "dbname": dbname,
        "user": "postgres",
        "password": cluster.superuser_password,
        "sslmode": "require",
        "connect_timeout": 5,
    }


def admin_connection(dbname: str = "postgres") -> PgConnection:
    """A superuser autocommit session on the target cluster."""
    conn: PgConnection = tls_target.current().superuser(dbname)
    return conn


def target_for(dbname: str, **overrides: Any) -> pg.Target:
    """How the provisioner connects: the portal role, verify-full TLS against the run's CA."""
    cluster = tls_target.current()
    fields: dict[str, Any] = {
        "host": cluster.host,
        "port": cluster.port,
        "dbname": dbname,
        "user": cluster.portal_role,
        "password": cluster.portal_password,
        "sslmode": "verify-full",
        "sslrootcert": crypto.ca_bundle_path(cluster.ca_pem),
        "connect_timeout": 5,
    }
    fields.update(overrides)
    return pg.Target(**fields)


@dataclass
class Warehouse:
    """The scratch target: ``admin`` is a superuser autocommit session in it, for arranging and
    inspecting; ``target`` is what the provisioner connects with."""

    name: str
    target: pg.Target
    admin: PgConnection

    def run(self, query: str | sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
        with self.admin.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def run_as_portal(self, query: str | sql.Composable) -> None:
        """Run ``query`` through the portal's own login (out of band, but on the portal's authority:
        what the portal granted, only the portal's role, not even the table owner, revokes)."""
        with self.admin.cursor() as cur:
            cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(tls_target.PORTAL_ROLE)))
            try:
                cur.execute(query)
            finally:
                cur.execute("RESET ROLE")

    def connect(self) -> PgConnection:
        return pg.connect(self.target)

    def acl(self, obj: pg.ObjectRef) -> tuple[Any, ...]:
        """The table's and its columns' raw ACLs, for comparing before/after."""
        rows = self.run(
            "SELECT c.relacl::text, (SELECT array_agg(a.attname::text || '=' || coalesce(a.attacl::text, '')"
            " ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
            (obj.schema, obj.name),
        )
        return rows[0]


def _build(wh: Warehouse) -> None:
    wh.run("CREATE SCHEMA sales")
    wh.run("CREATE TABLE sales.customers (id integer PRIMARY KEY, name text, email text, ssn text, country text)")
    wh.run(
        "INSERT INTO sales.customers SELECT i, 'Person ' || i, 'p' || i || '@example.org', "
        "lpad(i::text, 9, '0'), 'FR' FROM generate_series(1, 5) i"
    )
    wh.run("CREATE TABLE sales.orders (id integer, customer_id integer, amount numeric)")
    wh.run("CREATE TABLE public.x (id integer)")
    wh.run(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(HOSTILE_SCHEMA)))
    wh.run(
        sql.SQL("CREATE TABLE {} (id integer, {} text, {} text, amount numeric)").format(
            sql.Identifier(HOSTILE_SCHEMA, HOSTILE_TABLE),
            sql.Identifier(HOSTILE_COLUMN),
            sql.Identifier(PERCENT_COLUMN),
        )
    )
    wh.run(
        sql.SQL("INSERT INTO {} VALUES (1, '4111', 'yes', 9.5), (2, '5500', 'no', 3)").format(
            sql.Identifier(HOSTILE_SCHEMA, HOSTILE_TABLE)
        )
    )


def _run_roles(conn: PgConnection) -> list[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) ORDER BY 1", (RUN_PREFIX,))
        return [r[0] for r in cur.fetchall()]


def drop_run_roles(dbnames: list[str]) -> None:
    """DROP OWNED BY in each database the roles may hold something in, then DROP ROLE."""
    admin = admin_connection()
    try:
        roles = _run_roles(admin)
        if not roles:
            return
        idents = sql.SQL(", ").join(sql.Identifier(r) for r in roles)
        for dbname in dbnames:
            try:
                conn = admin_connection(dbname)
            except psycopg2.OperationalError:
                continue  # already dropped: nothing is held there any more
            try:
                with conn.cursor() as cur:
                    # What the portal's role granted only it can revoke (a superuser revokes as owner).
                    cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(tls_target.PORTAL_ROLE)))
                    cur.execute(
                        "SELECT nspname FROM pg_namespace WHERE has_schema_privilege(oid, 'USAGE WITH GRANT OPTION')"
                    )
                    for (schema,) in cur.fetchall():
                        args = (sql.Identifier(schema), idents)
                        cur.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {} CASCADE").format(*args))
                        cur.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {} CASCADE").format(*args))
                    # The CONNECT the portal gave its managed roles (DROP OWNED BY, run by a superuser,
                    # revokes only what the owner granted).
                    database = sql.Identifier(dbname)
                    cur.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {} CASCADE").format(database, idents))
                    cur.execute("RESET ROLE")
                    cur.execute(sql.SQL("DROP OWNED BY {}").format(idents))
            finally:
                conn.close()
        with admin.cursor() as cur:
            for role in roles:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE usename = %s AND pid <> pg_backend_pid()",
                    (role,),
                )
                cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    finally:
        admin.close()


@pytest.fixture(scope="session")
def warehouse(target_server: tls_target.TlsCluster) -> Iterator[Warehouse]:
    name = f"gov_tp_{secrets.token_hex(6)}"
    root = admin_connection()
    with root.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    root.close()
    wh = Warehouse(name, target_for(name), admin_connection(name))
    try:
        _build(wh)
        with wh.admin.cursor() as cur:
            cur.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {} WITH GRANT OPTION").format(
                    sql.Identifier(name), sql.Identifier(target_server.portal_role)
                )
            )
            for schema in ("sales", "public", HOSTILE_SCHEMA):
                tls_target.grant_schema(cur, schema, target_server.portal_role)
        yield wh
    finally:
        pg.POOL.close_all()
        wh.admin.close()
        drop_run_roles([name])
        root = admin_connection()
        try:
            with root.cursor() as cur:
                cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        finally:
            root.close()
        drop_run_roles([])  # roles that only existed cluster-wide


_counter = itertools.count(1)


@pytest.fixture
def role_name() -> Callable[[str], str]:
    """A fresh, unique role name carrying the run prefix: ``role_name("analyst")``."""

    def make(label: str) -> str:
        return f"{RUN_PREFIX}{label}_{next(_counter)}"

    return make


@pytest.fixture
def conn(warehouse: Warehouse) -> Iterator[PgConnection]:
    """A provisioner connection to the warehouse (autocommit off), like the pool lends."""
    c = warehouse.connect()
    try:
        yield c
    finally:
        c.close()


def converge(
    conn: PgConnection, desired: pg.Desired, *, managed: bool = True, lock_key: str | None = None
) -> pg.ApplyResult:
    plan = pgp.plan_converge(desired, managed_principal=managed)
    return pg.apply(conn, plan, lock_key=lock_key or f"test:{desired.obj.schema}.{desired.obj.name}")


def as_role(wh: Warehouse, role: str, query: sql.Composable | str) -> list[tuple[Any, ...]]:
    """Run ``query`` with the privileges of ``role`` (SET LOCAL ROLE in a superuser session, as a
    member login would have them) and roll back; raises psycopg2.errors.InsufficientPrivilege."""
    conn = psycopg2.connect(**server_params(wh.name))
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            cur.execute(query)
            return cur.fetchall() if cur.description else []
    finally:
        conn.rollback()
        conn.close()


def can_run(wh: Warehouse, role: str, query: sql.Composable | str) -> bool:
    try:
        as_role(wh, role, query)
    except psycopg2.errors.InsufficientPrivilege:
        return False
    return True


def select(columns: str | tuple[str, ...], obj: pg.ObjectRef) -> sql.Composable:
    cols = sql.SQL("*") if columns == "*" else sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    return sql.SQL("SELECT {} FROM {}").format(cols, sql.Identifier(obj.schema, obj.name))
