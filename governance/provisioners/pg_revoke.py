"""Ending access on a PostgreSQL target for good (no Django here): login roles and open sessions.

A REVOKE stops new statements from using a privilege; it does not end a session that is already
logged in, nor a query that is already running, nor remove what a login created. This module does
the rest, each step verified by reading the catalog afterwards:

* :func:`plan_disable_login` — ``ALTER ROLE login NOLOGIN``, committed on its own first: from then
  on no new session can start (a terminated client that reconnects is refused);
* :func:`terminate_sessions` — ``pg_terminate_backend(pid, timeout)`` on every session of the login
  (all databases of the cluster), waiting until each backend has exited, so that its temporary
  objects are gone too; it returns how many were ended;
* :func:`plan_drop_login` — ``GRANT login TO CURRENT_USER`` (``DROP OWNED`` needs the privileges of
  the role it names; a CREATEROLE role may grant itself any role it manages: PostgreSQL 15 lets
  CREATEROLE grant any non-superuser role, 16+ the roles it created), ``DROP OWNED BY login``
  (drops what the login owns in the governed database and revokes what was granted to it), then
  ``DROP ROLE`` (which also removes the portal's temporary membership), in one transaction;
* :func:`verify_login_gone` — by the role's oid read before the drop: no ``pg_roles`` row, no session
  in ``pg_stat_activity`` (whose ``usename`` is NULL once the role is gone, hence the oid), no
  ``pg_shdepend`` entry (an object or privilege in another database keeps the role: DROP ROLE then
  fails with 2BP01, and :func:`dependencies` says where).

:func:`terminate_member_sessions` ends the sessions of every login that holds a principal's
privileges (the principal itself when it can log in, its members, their JIT logins) in the
current database: a classification can ask for it when a grant on its data is revoked, so that a
long-running query on revoked data does not go on.

The portal's role needs ``pg_signal_backend`` to end other roles' sessions (docs/security.md);
superusers' sessions are never touched (a non-superuser may not end them, and the portal must not).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from .postgres import (
    Plan,
    Statement,
    _check_role_name,
    _read,
    _require_idle,
    _rollback_quietly,
    classify_error,
    display_name,
)

# How long pg_terminate_backend waits for each backend to exit (PostgreSQL 14+).
DEFAULT_TERMINATE_WAIT_MS = 5_000


def _exists(name: str) -> sql.Composable:
    return sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {})").format(sql.Literal(name))


def plan_disable_login(name: str) -> Plan:
    """``ALTER ROLE name NOLOGIN`` while the role exists and can still log in."""
    _check_role_name(name, "login role")
    guard = sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {} AND rolcanlogin)").format(
        sql.Literal(name)
    )
    statement = Statement.of(
        sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(name)),
        guard=guard,
        condition=f"role {display_name(name)} exists and can log in",
    )
    return Plan.build([statement])


def plan_drop_login(name: str) -> Plan:
    """Drop what the login owns here, the privileges granted to it, and the role (see the module)."""
    _check_role_name(name, "login role")
    role = sql.Identifier(name)
    exists = f"role {display_name(name)} exists"
    return Plan.build(
        [
            Statement.of(sql.SQL("GRANT {} TO CURRENT_USER").format(role), guard=_exists(name), condition=exists),
            Statement.of(sql.SQL("DROP OWNED BY {}").format(role), guard=_exists(name), condition=exists),
            Statement.of(sql.SQL("DROP ROLE IF EXISTS {}").format(role)),
        ]
    )


def role_oid(conn: PgConnection, name: str) -> int | None:
    """The oid of role ``name``, or None when there is no such role."""
    with _read(conn, "role_oid()") as cur:
        cur.execute("SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %s", [name])
        row = cur.fetchone()
    return int(row[0]) if row else None


def _terminate(conn: PgConnection, where: sql.Composable, params: dict[str, Any], wait_ms: int, what: str) -> int:
    """End the client sessions matching ``where`` (never this one, never a superuser's), waiting for
    each to exit; commit; return how many ended. (No filter on ``backend_type``: without
    pg_read_all_stats it reads NULL for other roles' sessions.)"""
    _require_idle(conn, what)
    query = sql.SQL(
        "SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(a.pid, %(wait)s))"
        " FROM pg_catalog.pg_stat_activity a JOIN pg_catalog.pg_roles r ON r.oid = a.usesysid"
        " WHERE a.pid <> pg_catalog.pg_backend_pid() AND NOT r.rolsuper"
        " AND {}"
    ).format(where)
    try:
        with conn.cursor() as cur:
            cur.execute(query, {**params, "wait": int(wait_ms)})
            row = cur.fetchone()
        conn.commit()
    except psycopg2.Error as exc:
        _rollback_quietly(conn)
        raise classify_error(exc, statement=what) from exc
    except BaseException:
        _rollback_quietly(conn)
        raise
    return int(row[0]) if row else 0


def terminate_sessions(conn: PgConnection, name: str, *, wait_ms: int = DEFAULT_TERMINATE_WAIT_MS) -> int:
    """End every session of login ``name`` in the whole cluster; return how many ended."""
    _check_role_name(name, "login role")
    return _terminate(conn, sql.SQL("r.rolname = %(name)s"), {"name": name}, wait_ms, f"ending the sessions of {name}")


def terminate_member_sessions(conn: PgConnection, principal: str, *, wait_ms: int = DEFAULT_TERMINATE_WAIT_MS) -> int:
    """End the sessions in this database of every login holding ``principal``'s privileges (itself,
    its members, theirs: ``pg_has_role(… 'MEMBER')``) except the portal's own role; return the count."""
    _check_role_name(principal, "principal")
    where = sql.SQL(
        "a.datname = pg_catalog.current_database() AND r.rolname <> CURRENT_USER"
        " AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles p WHERE p.rolname = %(principal)s"
        " AND pg_catalog.pg_has_role(a.usesysid, p.oid, 'MEMBER'))"
    )
    return _terminate(conn, where, {"principal": principal}, wait_ms, f"ending the sessions of {principal}'s logins")


SHARED = ""  # Dependency.database of shared objects (pg_shdepend.dbid 0)


@dataclass(frozen=True)
class Dependency:
    """Something in database ``database`` that keeps a role: objects it owns, privileges it holds."""

    database: str
    owned: int
    privileges: int

    def __str__(self) -> str:
        where = (
            "on shared objects (databases, tablespaces)"
            if self.database == SHARED
            else (f"in database {display_name(self.database)}")
        )
        return f"{self.owned} owned object(s) and {self.privileges} privilege(s) {where}"


_DEPENDENCIES_SQL = """
SELECT COALESCE(d.datname, ''),
       count(*) FILTER (WHERE s.deptype = 'o'),
       count(*) FILTER (WHERE s.deptype <> 'o')
FROM pg_catalog.pg_shdepend s LEFT JOIN pg_catalog.pg_database d ON d.oid = s.dbid
WHERE s.refclassid = 'pg_catalog.pg_authid'::regclass AND s.refobjid = %(oid)s
GROUP BY 1 ORDER BY 1
"""


def dependencies(conn: PgConnection, oid: int) -> list[Dependency]:
    """What still depends on the role with ``oid``, per database (``pg_shdepend``)."""
    with _read(conn, "dependencies()") as cur:
        cur.execute(_DEPENDENCIES_SQL, {"oid": oid})
        return [Dependency(str(db), int(owned), int(privs)) for db, owned, privs in cur.fetchall()]


def verify_login_gone(conn: PgConnection, name: str, oid: int | None) -> list[str]:
    """Problems left after dropping login ``name`` (``oid``: what it had before): its role, its
    sessions, anything it owned or held. Empty when nothing is left."""
    who = display_name(name)
    query = (
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %(name)s OR oid = %(oid)s),"
        " (SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE usename = %(name)s OR usesysid = %(oid)s)"
    )
    with _read(conn, "verify_login_gone()") as cur:
        cur.execute(query, {"name": name, "oid": oid or 0})
        role_left, sessions = cur.fetchone()
    problems = []
    if role_left:
        problems.append(f"role {who} still exists")
    if sessions:
        problems.append(f"{sessions} session(s) of {who} still open")
    if oid is not None:
        problems += [f"{who} still has {dep}" for dep in dependencies(conn, oid)]
    return problems


@dataclass(frozen=True)
class ObservedLogin:
    """A role named like the portal's JIT logins, as the target has it (reconciler)."""

    name: str
    can_login: bool
    valid_until: datetime | None
    sessions: int


def observe_logins(conn: PgConnection, prefix: str) -> list[ObservedLogin]:
    """Every role whose name starts with ``prefix`` (the source's ``<role prefix>j_``), with its
    LOGIN attribute, VALID UNTIL and number of open sessions in the cluster; one query."""
    if not prefix:
        raise ValueError("a JIT login prefix must not be empty: every role of the cluster would match")
    query = (
        "SELECT r.rolname, r.rolcanlogin, r.rolvaliduntil,"
        " (SELECT count(*) FROM pg_catalog.pg_stat_activity a WHERE a.usesysid = r.oid)"
        " FROM pg_catalog.pg_roles r WHERE pg_catalog.starts_with(r.rolname, %(prefix)s) ORDER BY r.rolname"
    )
    with _read(conn, "observe_logins()") as cur:
        cur.execute(query, {"prefix": prefix})
        return [ObservedLogin(name, bool(login), until, int(n)) for name, login, until, n in cur.fetchall()]
