"""Planning: the statements that converge a principal, a membership, a login role."""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection
from datetime import datetime

from psycopg2 import sql

from ..scram import scram_sha256_verifier
from .render import ROLE_OID, Guard, GuardKind, Plan, Statement, lock_name, topic
from .values import (
    Desired,
    ObjectRef,
    Privileges,
    _check_identifier,
    _check_role_name,
    _order_privileges,
    display_name,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


def role_oid(name: str) -> sql.Composable:
    """The oid of role ``name`` as an SQL expression, NULL when there is no such role."""
    return sql.SQL(ROLE_OID).format(sql.Literal(name))


ROLE_MISSING = GuardKind("role_missing", "pg_catalog.to_regrole(pg_catalog.quote_ident({role})) IS NULL", ("role",))

# (schema, grantee) pairs holding USAGE, hashed once per query (see CONNECT_LACKING for why): a
# schema's ACL holds an entry per package of its tables.
_HAS_DIRECT_USAGE = (
    "coalesce(({schema}::text, {role_oid}) IN (SELECT n.nspname::text, a.grantee"
    " FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a WHERE a.privilege_type = 'USAGE'), false)"
)
USAGE_HELD = GuardKind("usage_held", _HAS_DIRECT_USAGE, ("role", "schema"))
USAGE_LACKING = GuardKind("usage_lacking", f"NOT {_HAS_DIRECT_USAGE}", ("role", "schema"))


def _role_missing_guard(name: str) -> Guard:
    return Guard(ROLE_MISSING, (name,))


def _usage_guard(principal: str, schema: str, *, present: bool) -> Guard:
    return Guard(USAGE_HELD if present else USAGE_LACKING, (principal, schema))


@functools.lru_cache(maxsize=4096)  # pure, and a batch needs the same few statements hundreds of times
def _create_role_statement(name: str, *, login: bool) -> Statement:
    query = sql.SQL("CREATE ROLE {} {}").format(sql.Identifier(name), sql.SQL("LOGIN" if login else "NOLOGIN"))
    return Statement.of(
        query,
        guard=_role_missing_guard(name),
        condition=f"role {display_name(name)} does not exist",
        tolerate=("42710", "23505"),  # duplicate_object / unique_violation: created concurrently
        reads=(topic("role", name),),
        writes=(topic("role", name),),
    )


@functools.lru_cache(maxsize=4096)
def _grant_usage_statement(principal: str, schema: str) -> Statement:
    query = sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(principal))
    return Statement.of(
        query,
        guard=_usage_guard(principal, schema, present=False),
        condition=f"{display_name(principal)} lacks USAGE on schema {display_name(schema)}",
        locks=(lock_name("schema", schema),),
        reads=(topic("role", principal), topic("acl", principal)),
        writes=(topic("acl", principal),),
    )


# The principal lacks CONNECT on the database directly, and the portal may grant it. The (database,
# grantee) pairs holding CONNECT are read by one uncorrelated subquery, which PostgreSQL hashes once
# per query: the database's ACL holds an entry per package, and exploding it again for each guard
# made a batch's CONNECT guards grow with packages x packages (300 guards against 300 entries:
# 210-340 ms; 500 against 1,000 entries would be about a second per batch).
CONNECT_LACKING = GuardKind(
    "connect_lacking",
    "NOT coalesce(({database}::text, {role_oid}) IN (SELECT d.datname::text, a.grantee"
    " FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a WHERE a.privilege_type = 'CONNECT'), false)"
    " AND pg_catalog.has_database_privilege({database}, 'CONNECT WITH GRANT OPTION')",
    ("role", "database"),
)


@functools.lru_cache(maxsize=4096)
def _grant_connect_statement(principal: str, database: str) -> Statement:
    """``GRANT CONNECT ON DATABASE d TO p``, d being the governed database (the one the plan runs in).

    Why: PUBLIC holds CONNECT on every database by default, so a role the portal creates could
    connect to every database of the cluster (a JIT login inherits from it). docs/security.md has
    the DBA revoke PUBLIC's CONNECT everywhere; then only what is granted explicitly connects, and
    the portal grants its managed roles CONNECT on the governed database only. A JIT login holds
    nothing itself: it inherits CONNECT from the principal it is a member of, so dropping it needs
    no REVOKE first.

    Guarded: runs only while p lacks CONNECT directly (a role made before this existed gets it on
    its next converge) and while the portal's role holds CONNECT WITH GRANT OPTION (without it,
    PostgreSQL would only warn "no privileges were granted"; the reconciler's posture check says
    so instead). The GRANT rewrites the database's catalog row, which two sessions must not do at
    once ("tuple concurrently updated"), so it takes the database's advisory lock, lazily (only
    the first grant of each principal writes) and last: it ends every plan, after the schema
    locks (see :func:`apply`).
    """
    query = sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(principal))
    guard = Guard(CONNECT_LACKING, (principal, database))
    condition = (
        f"{display_name(principal)} lacks CONNECT on database {display_name(database)} and the portal may grant it"
    )
    return Statement.of(
        query,
        guard=guard,
        condition=condition,
        locks=(lock_name("database", database),),
        reads=(topic("role", principal), topic("acl", principal)),
        writes=(topic("acl", principal),),
    )


def _connect_statements(name: str, database: str | None) -> list[Statement]:
    """With ``database`` (the governed one): the managed principal's CONNECT on it; else nothing."""
    if database is None:
        return []
    _check_identifier(database, "database name")
    return [_grant_connect_statement(name, database)]


def plan_converge(
    desired: Desired, *, managed_principal: bool, login: bool = False, database: str | None = None
) -> Plan:
    """The statements that make ``desired.principal`` hold exactly ``desired`` on ``desired.obj``.

    Non-empty desired state:
      1. ``CREATE ROLE p NOLOGIN`` (``LOGIN`` when ``login``) if ``managed_principal`` and the role is
         missing; an existing role's attributes are never changed;
      2. ``GRANT USAGE ON SCHEMA s TO p`` if p lacks it directly;
      3. ``REVOKE ALL ON TABLE s.t FROM p`` (also removes p's column privileges on s.t);
      4. ``GRANT <table privileges> ON TABLE s.t TO p``;
      5. ``GRANT SELECT (c1, c2), ... ON TABLE s.t TO p``;
      6. ``GRANT CONNECT ON DATABASE d TO p`` if ``managed_principal``, ``database`` (the governed
         database d) is given and p lacks it (see :func:`_grant_connect_statement`).
    Empty desired state: only ``REVOKE ALL ON TABLE s.t FROM p``, run only if p holds something on
    s.t directly, so that a revoke of an already-dropped table or role succeeds (converged).

    USAGE on the schema is never revoked here (another object of the schema may still be granted):
    the caller uses :func:`plan_schema_usage` once the principal has nothing left in the schema.
    """
    if desired.packaged:
        raise ValueError("a packaged desired state is planned by pg_packages.plan_converge()")
    p = desired.principal
    obj = desired.obj
    lock_keys = [lock_name("table", obj.schema, obj.name)]

    if desired.empty:
        return Plan.build([revoke_held_statement(p, obj)], lock_keys)

    statements: list[Statement] = []
    if managed_principal:
        statements.append(_create_role_statement(p, login=login))
    statements.append(_grant_usage_statement(p, obj.schema))
    statements += [Statement.of(query) for query in exact_grant_queries(p, obj, desired.privileges)]
    if managed_principal:
        statements += _connect_statements(p, database)  # last: it may take the database lock
    return Plan.build(statements, lock_keys)


# The {role} holds a table or column privilege on the table {schema}.{name} directly.
HOLDS_DIRECTLY = GuardKind(
    "holds_directly",
    "EXISTS (SELECT 1 FROM pg_catalog.pg_class c"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = {schema} AND c.relname = {name} AND ("
    "EXISTS (SELECT 1 FROM pg_catalog.aclexplode(c.relacl) a WHERE a.grantee = {role_oid})"
    " OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute att, pg_catalog.aclexplode(att.attacl) a"
    " WHERE att.attrelid = c.oid AND att.attnum > 0 AND att.attacl IS NOT NULL AND a.grantee = {role_oid})))",
    ("role", "schema", "name"),
)


@functools.lru_cache(maxsize=4096)
def revoke_held_statement(role: str, obj: ObjectRef) -> Statement:
    """``REVOKE ALL ON TABLE obj FROM role``, run only while ``role`` holds something there directly
    (so that a revoke of an already-dropped table or role succeeds: converged)."""
    revoke = sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(
        sql.Identifier(obj.schema, obj.name), sql.Identifier(role)
    )
    guard = Guard(HOLDS_DIRECTLY, (role, obj.schema, obj.name))
    return Statement.of(
        revoke,
        guard=guard,
        condition=f"{display_name(role)} holds privileges on {obj} directly",
        reads=(topic("role", role), topic("acl", role)),
        writes=(topic("acl", role),),
    )


def exact_grant_queries(role: str, obj: ObjectRef, privileges: Privileges) -> list[sql.Composable]:
    """``REVOKE ALL ON TABLE`` then the GRANTs of exactly ``privileges`` (normalised): run in one
    transaction, the role holds exactly them on ``obj`` with no gap for other sessions."""
    privileges = privileges.normalized()
    role_id = sql.Identifier(role)
    table = sql.Identifier(obj.schema, obj.name)
    queries: list[sql.Composable] = [sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(table, role_id)]
    table_privs = _order_privileges(privileges.table)
    if table_privs:
        queries.append(
            sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                sql.SQL(", ").join(sql.SQL(priv) for priv in table_privs), table, role_id
            )
        )
    by_privilege: dict[str, list[str]] = {}
    for column in sorted(privileges.columns):
        for priv in privileges.columns[column]:
            by_privilege.setdefault(priv, []).append(column)
    if by_privilege:
        parts = [
            sql.SQL("{} ({})").format(sql.SQL(priv), sql.SQL(", ").join(sql.Identifier(c) for c in by_privilege[priv]))
            for priv in _order_privileges(by_privilege)
        ]
        queries.append(sql.SQL("GRANT {} ON TABLE {} TO {}").format(sql.SQL(", ").join(parts), table, role_id))
    return queries


def plan_schema_usage(principal: str, schema: str, keep: bool) -> Plan:
    """GRANT (``keep``) or REVOKE USAGE on ``schema``; each runs only when it changes something."""
    _check_role_name(principal, "principal")
    _check_identifier(schema, "schema name")
    if keep:
        return Plan.build([_grant_usage_statement(principal, schema)])
    query = sql.SQL("REVOKE USAGE ON SCHEMA {} FROM {}").format(sql.Identifier(schema), sql.Identifier(principal))
    statement = Statement.of(
        query,
        guard=_usage_guard(principal, schema, present=True),
        condition=f"{display_name(principal)} holds USAGE on schema {display_name(schema)} directly",
    )
    return Plan.build([statement], [lock_name("schema", schema)])


def plan_ensure_role(name: str, *, database: str | None = None) -> Plan:
    """``CREATE ROLE name NOLOGIN`` when it does not exist yet (a managed principal), and with
    ``database`` its CONNECT on the governed database (as in :func:`plan_converge`)."""
    _check_role_name(name)
    return Plan.build([_create_role_statement(name, login=False), *_connect_statements(name, database)])


def plan_membership(member: str, group: str, present: bool) -> Plan:
    """``GRANT group TO member`` or ``REVOKE group FROM member``.

    The REVOKE runs only while both roles exist, so revoking from an already-dropped role converges.
    A REVOKE may name a predefined ``pg_*`` group (the reconciler undoing an out-of-band
    ``GRANT pg_read_all_data TO …``); a GRANT never does.
    """
    _check_role_name(member, "member")
    if present or not group.startswith("pg_"):
        _check_role_name(group, "group")
    else:
        _check_identifier(group, "group")
    touched = (topic("members", group), topic("memberships", member))
    if present:
        return Plan.build(
            [
                Statement.of(
                    sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(member)), writes=touched
                )
            ]
        )
    guard = sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m"
        " JOIN pg_catalog.pg_roles g ON g.oid = m.roleid JOIN pg_catalog.pg_roles r ON r.oid = m.member"
        " WHERE g.rolname = {} AND r.rolname = {})"
    ).format(sql.Literal(group), sql.Literal(member))
    statement = Statement.of(
        sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), sql.Identifier(member)),
        guard=guard,
        condition=f"{display_name(member)} is a member of {display_name(group)}",
        reads=(*touched, topic("role", group), topic("role", member)),
        writes=touched,
    )
    return Plan.build([statement])


def _valid_until_text(valid_until: datetime | None) -> str:
    if valid_until is None:
        return "infinity"
    if valid_until.tzinfo is None or valid_until.utcoffset() is None:
        raise ValueError("valid_until must be timezone-aware")
    return valid_until.isoformat()


def plan_login_role(name: str, password: str, valid_until: datetime | None, member_of: str | Collection[str]) -> Plan:
    """A JIT login role: ``CREATE ROLE name LOGIN PASSWORD '…' VALID UNTIL '…' IN ROLE group``.

    The password is sent as a SCRAM-SHA-256 verifier computed here (the plaintext never reaches the
    target or its logs), as a secret Literal: the plan text, digest and errors show '[REDACTED]'.
    Idempotent: CREATE runs only while the role is missing; ALTER ROLE and GRANT then (re)assert the
    password, expiry and memberships, so a retried job converges to the same role. Roles named
    here must be in the portal's own namespace (prefix): an existing role of that name is taken over.
    """
    _check_role_name(name, "login role")
    groups = sorted({member_of} if isinstance(member_of, str) else set(member_of))
    for group in groups:
        _check_role_name(group, "group")
    verifier = scram_sha256_verifier(password)
    until = sql.Literal(_valid_until_text(valid_until))
    secret = (verifier,)
    role = sql.Identifier(name)
    in_role = (
        sql.SQL(" IN ROLE {}").format(sql.SQL(", ").join(sql.Identifier(g) for g in groups)) if groups else sql.SQL("")
    )
    create = Statement.of(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} VALID UNTIL {}{}").format(
            role, sql.Literal(verifier), until, in_role
        ),
        guard=_role_missing_guard(name),
        condition=f"role {display_name(name)} does not exist",
        tolerate=("42710", "23505"),
        secret_values=secret,
    )
    alter = Statement.of(
        sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {} VALID UNTIL {}").format(role, sql.Literal(verifier), until),
        secret_values=secret,
    )
    statements = [create, alter]
    statements += [Statement.of(sql.SQL("GRANT {} TO {}").format(sql.Identifier(g), role)) for g in groups]
    return Plan.build(statements)


def plan_drop_role(name: str) -> Plan:
    """End a login role: terminate its sessions, then ``DROP ROLE IF EXISTS``.

    Meant for roles the portal created that own nothing and hold only memberships (JIT login
    roles); DROP ROLE removes the memberships. Terminating other roles' sessions needs superuser or
    membership in ``pg_signal_backend``. A login that races in between the terminate and the commit
    of the DROP survives until it disconnects (VALID UNTIL already bounds new logins at expiry).
    """
    _check_role_name(name, "role")
    terminate = sql.SQL(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity"
        " WHERE usename = {} AND pid <> pg_catalog.pg_backend_pid()"
    ).format(sql.Literal(name))
    drop = sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name))
    return Plan.build([Statement.of(terminate), Statement.of(drop)])
