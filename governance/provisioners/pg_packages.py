"""Access packages: privileges held by NOLOGIN package roles, grantees made members of them.

Why: a table's ACL (``pg_class.relacl``) is stored inline and cannot be TOASTed. With one entry per
grantee, PostgreSQL refuses every further GRANT on a popular table after roughly 1,000-2,300 of them
(``row is too big``). Here the table's ACL holds one entry per distinct *package*, one per distinct
(object, privileges) on a database; a person's (or a portal Role's) principal role receives
membership, which is a row of ``pg_auth_members`` and grows nothing on the table. Membership in an
existing package is one statement that rewrites no catalog row of the table, so grants on one table
no longer serialise on its ACL either.

A converge plan for a packaged :class:`~governance.provisioners.postgres.Desired` (one transaction):

1. ``CREATE ROLE principal NOLOGIN`` when managed and missing;
2. per package: ``CREATE ROLE package NOLOGIN`` when missing, and its privileges (``GRANT USAGE ON
   SCHEMA``, ``REVOKE ALL``, ``GRANT …``) only when the package's own ACL differs from its definition;
3. ``GRANT package TO principal`` per package;
4. ``REVOKE ALL ON TABLE … FROM principal`` when it holds privileges there directly: the conversion
   of the old one-role-per-grant scheme, in the same transaction as the membership, so no session
   ever sees the grantee without access;
5. per stale package: ``REVOKE package FROM principal`` when it is a member, then the package is
   dropped when nobody is a member any more (its privileges revoked, ``DROP ROLE``);
6. ``GRANT CONNECT`` on the governed database to each package lacking it. Members inherit it, as
   they inherit the table privileges: the database's ACL, like the table's, grows with the number
   of packages, not of people (one entry per principal made every further ``GRANT CONNECT`` rewrite
   and every CONNECT guard scan an ACL as long as the company). A principal that loses its last
   package can no longer connect either.

Verification reads the packages' DIRECT ACLs, the principal's direct ACL (it must hold nothing
there itself) and ``pg_auth_members`` plus ``pg_has_role(…, 'USAGE')`` (the principal really
inherits each package's privileges: a NOINHERIT login would not). Knows no Django.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Collection, Sequence
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from governance.provisioners import pg_row_filters as pgr
from governance.provisioners import pg_views as pgv
from governance.provisioners import postgres as pg
from governance.provisioners.postgres import (
    NAMEDATALEN,
    Desired,
    Guard,
    GuardKind,
    ObjectRef,
    Package,
    Plan,
    Privileges,
    Statement,
    _connect_statements,
    _create_role_statement,
    _order_privileges,
    display_name,
    exact_grant_queries,
    lock_name,
    revoke_held_statement,
    topic,
)

PACKAGE_KIND = "p"
_FOLD = re.compile(r"[^a-z0-9_]")
_DIGEST_CHARS = 12


def package_prefix(role_prefix: str) -> str:
    """The name prefix of every package role on a source with ``role_prefix`` (``gov_p_``)."""
    return f"{role_prefix}{PACKAGE_KIND}_"


def package_name(role_prefix: str, database: str, obj: ObjectRef, privileges: Privileges, row_filter: str = "") -> str:
    """``<prefix>p_<table>_<digest>``: readable, deterministic, at most 63 bytes.

    The digest (sha256, 12 hex characters) covers the database (roles are cluster-wide, privileges
    per database), the object and the normalised privileges, so two packages never share a name and
    the same intent always gets the same one. ``row_filter`` (the rendered predicate of a filtered
    package, values bound) is covered too: one package per distinct compiled filter.
    """
    norm = privileges.normalized()
    payload = json.dumps(
        [
            database,
            obj.schema,
            obj.name,
            _order_privileges(norm.table),
            {c: _order_privileges(p) for c, p in norm.columns.items()},
            *([row_filter] if row_filter else []),
        ],
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]
    head = package_prefix(_FOLD.sub("_", role_prefix.lower()))
    room = max(NAMEDATALEN - len(head.encode()) - _DIGEST_CHARS - 1, 0)
    readable = _FOLD.sub("_", obj.name.lower())[:room]
    return f"{head}{readable}_{digest}" if readable else f"{head}{digest}"


def package_namer(role_prefix: str, database: str, privileges: Privileges) -> Callable[[ObjectRef], str]:
    """``package_name`` for many objects with the same privileges (the reconciler names 10,000
    packages per run): the privileges' part of the payload and the prefix are made once, and the
    payload is assembled from JSON-quoted strings. Returns exactly what ``package_name`` returns (a
    test compares them); 10,000 names in 14 ms instead of 274 ms, measured on this machine."""
    norm = privileges.normalized()
    tail = json.dumps(
        [_order_privileges(norm.table), {c: _order_privileges(p) for c, p in norm.columns.items()}],
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )[1:]
    head = package_prefix(_FOLD.sub("_", role_prefix.lower()))
    room = max(NAMEDATALEN - len(head.encode()) - _DIGEST_CHARS - 1, 0)
    quote = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) does to a string
    start = "[" + quote(database) + ","

    def name(obj: ObjectRef) -> str:
        payload = start + quote(obj.schema) + "," + quote(obj.name) + "," + tail
        digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]
        readable = _FOLD.sub("_", obj.name.lower())[:room]
        return f"{head}{readable}_{digest}" if readable else f"{head}{digest}"

    return name


def package(
    role_prefix: str,
    database: str,
    obj: ObjectRef,
    privileges: Privileges,
    row_filter: tuple[Any, ...] | None = None,
    rls: pg.RowSecurity | None = None,
) -> Package:
    """The package of ``privileges`` on ``obj``; filtered by ``row_filter`` (bound) when given, and
    with its row-level security policy when the object is under row filters (``rls``)."""
    text = pgr.text_of(row_filter) if row_filter is not None else ""
    return Package(
        package_name(role_prefix, database, obj, privileges, text),
        obj,
        privileges,
        row_filter=row_filter,
        rls=None if rls is None else pg.RowSecurity(rls.force, rls.confirmed, package_prefix(role_prefix)),
    )


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


def _expected_entries(privileges: Privileges) -> list[str]:
    """``':PRIV'`` (table) and ``'column:PRIV'`` entries, sorted by code point (SQL's "C" order)."""
    out = [f":{p}" for p in privileges.table]
    for column, privs in privileges.columns.items():
        out += [f"{column}:{p}" for p in privs]
    return sorted(set(out))


# True unless the package {role} exists, holds USAGE on the schema and exactly its privileges on
# the table {schema}.{name}: its own direct entries, the table's and its columns', compared as
# sorted sets with {expected} (a JSON array of ':PRIV' and 'column:PRIV' entries, sorted). One row
# from two catalog index lookups and the role's oid: a batch asks this for every package it touches.
# The schema's USAGE holders are one uncorrelated subquery, hashed once per query: the schema's ACL
# holds an entry per package of its tables, and exploding it for every guard grew as packages².
ACL_DIFFERS = GuardKind(
    "package_acl_differs",
    "NOT coalesce((SELECT"
    " (c.relnamespace, g.oid) IN (SELECT n.oid, a.grantee FROM pg_catalog.pg_namespace n,"
    " pg_catalog.aclexplode(n.nspacl) a WHERE a.privilege_type = 'USAGE')"
    ' AND ARRAY(SELECT DISTINCT x COLLATE "C" FROM ('
    "SELECT ':' || a.privilege_type FROM pg_catalog.aclexplode(c.relacl) a WHERE a.grantee = g.oid"
    " UNION ALL SELECT att.attname::text || ':' || a.privilege_type"
    " FROM pg_catalog.pg_attribute att, pg_catalog.aclexplode(att.attacl) a"
    " WHERE att.attrelid = c.oid AND att.attnum > 0 AND att.attacl IS NOT NULL AND NOT att.attisdropped"
    " AND a.grantee = g.oid) AS u(x) ORDER BY 1)"
    " = ARRAY(SELECT j.e FROM pg_catalog.jsonb_array_elements_text({expected}::jsonb) WITH ORDINALITY AS j(e, o)"
    " ORDER BY j.o)"
    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace,"
    " (SELECT {role_oid}) AS g(oid)"
    " WHERE s.nspname = {schema} AND c.relname = {name} AND g.oid IS NOT NULL), false)",
    ("role", "schema", "name", "expected"),
)


def _acl_differs(pkg: Package) -> Guard:
    expected = json.dumps(_expected_entries(pkg.privileges.normalized()), ensure_ascii=False)
    return Guard(ACL_DIFFERS, (pkg.name, pkg.obj.schema, pkg.obj.name, expected))


@functools.lru_cache(maxsize=4096)  # pure; a batch plans the same package for each of its members
def package_statements(pkg: Package) -> tuple[Statement, ...]:
    """The package role, created when missing, and its privileges, (re)asserted only when its ACL on
    the object differs from its definition (a new package, or one edited by hand)."""
    grants = [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(pkg.obj.schema), sql.Identifier(pkg.name)),
        *exact_grant_queries(pkg.name, pkg.obj, pkg.privileges),
    ]
    acl = Statement.of(
        sql.SQL("; ").join(grants),
        guard=_acl_differs(pkg),
        condition=f"package {display_name(pkg.name)} does not hold exactly these privileges yet",
        locks=(lock_name("schema", pkg.obj.schema),),  # GRANT USAGE rewrites the schema's row
        reads=(topic("role", pkg.name), topic("acl", pkg.name)),
        writes=(topic("acl", pkg.name),),
    )
    if pkg.rls is None:
        return (_create_role_statement(pkg.name, login=False), acl)
    policies = pgr.policy_statements(pkg.name, pkg.obj, pkg.row_filter, pkg.rls)
    return (_create_role_statement(pkg.name, login=False), acl, *policies)


def _drop_package_statement(name: str, obj: ObjectRef | None, database: str | None) -> Statement:
    """Revoke a package's privileges on ``obj`` (and its CONNECT on ``database``, the governed one)
    and drop it, only when it exists and has no member.

    Checked inside the transaction that holds the object's lock, so a grant of the same package
    cannot slip in between. A package that still holds something elsewhere (granted by hand) is left
    alone: the DROP's "dependent objects" error is rolled back to a savepoint. The REVOKE CONNECT
    rewrites the database's catalog row: the statement takes the database lock too (after the
    schema's, as every transaction does).
    """
    role = sql.Identifier(name)
    queries: list[sql.Composable] = []
    locks: list[str] = []
    if obj is not None:  # None: its object is gone (dropped), only CONNECT may be left
        queries += [
            sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(sql.Identifier(obj.schema, obj.name), role),
            sql.SQL("REVOKE USAGE ON SCHEMA {} FROM {}").format(sql.Identifier(obj.schema), role),
        ]
        locks.append(lock_name("schema", obj.schema))
    if database is not None:
        queries.append(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(sql.Identifier(database), role))
        locks.append(lock_name("database", database))
    query = sql.SQL("; ").join([*queries, sql.SQL("DROP ROLE {}").format(role)])
    guard = sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles g WHERE g.rolname = {name}"
        " AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m WHERE m.roleid = g.oid))"
    ).format(name=sql.Literal(name))
    return Statement.of(
        query,
        guard=guard,
        condition=f"package {display_name(name)} exists and has no member left",
        locks=tuple(locks),
        reads=(topic("role", name), topic("members", name)),
        writes=(topic("role", name), topic("acl", name), topic("members", name)),
        # 2BP01 dependent_objects_still_exist; 42704 undefined_object (the schema or table is gone)
        tolerate=("2BP01", "42704", "42P01", "3F000"),
    )


def drop_empty_package_statement(name: str, database: str | None, schemas: Sequence[str] = ()) -> Statement:
    """Drop a package that holds nothing on any table any more (its governed view was dropped with a
    column, CASCADE), members or not: it gives them nothing. Its USAGE on ``schemas`` (the governed
    one) and its CONNECT are revoked first; if it still holds anything anywhere (granted by hand, in
    any database of the cluster), PostgreSQL refuses the DROP (2BP01, rolled back to a savepoint)
    and the package is left alone."""
    role = sql.Identifier(name)
    queries: list[sql.Composable] = [
        sql.SQL("REVOKE USAGE ON SCHEMA {} FROM {}").format(sql.Identifier(schema), role) for schema in schemas
    ]
    locks: list[str] = [lock_name("schema", schema) for schema in schemas]
    if database is not None:
        queries.append(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(sql.Identifier(database), role))
        locks.append(lock_name("database", database))
    return Statement.of(
        sql.SQL("; ").join([*queries, sql.SQL("DROP ROLE {}").format(role)]),
        guard=sql.SQL("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {})").format(sql.Literal(name)),
        condition=f"package {display_name(name)} exists (it holds nothing on any table)",
        locks=tuple(locks),
        reads=(topic("role", name), topic("members", name)),
        writes=(topic("role", name), topic("acl", name), topic("members", name)),
        tolerate=("2BP01", "42704", "3F000"),
    )


def plan_converge(
    desired: Desired, *, managed_principal: bool, login: bool = False, database: str | None = None
) -> Plan:
    """The statements that make ``desired.principal`` hold ``desired`` through its packages (see the
    module's docstring for the order and why); a desired state that is not packaged is planned by
    :func:`governance.provisioners.postgres.plan_converge` (direct privileges)."""
    if not desired.packaged:
        return pg.plan_converge(desired, managed_principal=managed_principal, login=login, database=database)
    p = desired.principal
    obj = desired.obj
    statements: list[Statement] = []
    if desired.packages and managed_principal:
        statements.append(_create_role_statement(p, login=login))
    for pkg in desired.packages:
        if isinstance(pkg.view, pgv.GovernedView):
            statements += pgv.view_statements(pkg.view)
        statements += package_statements(pkg)
    statements += [pg.plan_membership(p, pkg.name, True).statements[0] for pkg in desired.packages]
    statements.append(revoke_held_statement(p, obj))
    statements += [pg.plan_membership(p, name, False).statements[0] for name in desired.stale]
    for name in desired.stale:
        on = desired.stale_on.get(name, obj)
        if on == obj:  # a filtered package's policy lives on the table; a view's package has none
            statements.append(pgr.drop_policy_statement(name, obj))
        statements.append(_drop_package_statement(name, on, database))
    views_left = sorted(set(desired.stale_on.values()) - {pkg.obj for pkg in desired.packages})
    statements += [pgv.drop_view_statement(view, database) for view in views_left]
    for pkg in desired.packages:
        statements += _connect_statements(pkg.name, database)  # last: it may take the database lock
    return Plan.build(statements, [lock_name("table", obj.schema, obj.name)])


def plan_drop_packages(obj: ObjectRef | None, names: Collection[str], *, database: str | None = None) -> Plan:
    """Drop packages of ``obj`` (None: a package holding nothing on any table any more) that nobody
    is a member of (the reconciler's orphan repair); ``database`` is the governed one, where they
    hold CONNECT."""
    return Plan.build(
        [
            st
            for n in sorted(names)
            for st in ([] if obj is None else [pgr.drop_policy_statement(n, obj)])
            + [_drop_package_statement(n, obj, database)]
        ],
        [] if obj is None else [lock_name("table", obj.schema, obj.name)],
    )


# ---------------------------------------------------------------------------------------------
# Verifying
# ---------------------------------------------------------------------------------------------

_MEMBERSHIP_SQL = """
SELECT x.idx, x.grp, x.want, g.oid IS NOT NULL,
       EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m WHERE m.roleid = g.oid AND m.member = r.oid),
       CASE WHEN g.oid IS NOT NULL AND r.oid IS NOT NULL
            THEN pg_catalog.pg_has_role(r.oid, g.oid, 'USAGE') ELSE false END
FROM (SELECT * FROM unnest(%(m_idx)s::int[], %(m_member)s::text[], %(m_grp)s::text[], %(m_want)s::bool[])
      AS u(idx, member, grp, want) ORDER BY u.member OFFSET 0) AS x,
     LATERAL (SELECT pg_catalog.to_regrole(pg_catalog.quote_ident(x.grp))::oid OFFSET 0) AS g(oid),
     LATERAL (SELECT pg_catalog.to_regrole(pg_catalog.quote_ident(x.member))::oid OFFSET 0) AS r(oid)
"""
# Each role's oid looked up once per row, and the membership by the (roleid, member) index: matched
# by name through pg_roles, a package's every member was read for each row (a package of a popular
# table has one per person). Rows in member order: pg_has_role() caches the role memberships of the
# LAST member it computed, so a batch whose members alternate (two people's grants interleaved)
# recomputed a member's whole membership set on every row: 1.2 ms each for a member of 500
# packages, 120-150 ms per batch of 500, most of the verification's time. OFFSET 0 keeps the sort
# below the projection and the lookups from being inlined into each use.


def verify(conn: PgConnection, desired: Desired) -> list[str]:
    """Differences between ``desired`` (packaged or direct) and the target; empty = verified."""
    return verify_many(conn, [desired])[0]


def verify_many(conn: PgConnection, desireds: Sequence[Desired]) -> list[list[str]]:
    """Differences per desired state, in order, in one query whatever their number: the direct
    ACLs of every package and principal (:data:`postgres.VERIFY_SQL`) and the memberships."""
    return verify_check(conn, desireds).run(conn, "verify()")


_VERIFY_PREPARED = pg.Prepared.of(
    "gov_verify_packaged_v3",
    sql.SQL(
        "SELECT (SELECT coalesce(json_agg(json_build_array(v.a, v.b, v.c, v.d, v.e)), '[]')"
        " FROM ({}) AS v(a, b, c, d, e)),"
        " (SELECT coalesce(json_agg(json_build_array(m.a, m.b, m.c, m.d, m.e, m.f)), '[]')"
        " FROM ({}) AS m(a, b, c, d, e, f))"
    ).format(sql.SQL(pg.VERIFY_SQL), sql.SQL(_MEMBERSHIP_SQL)),
    (*pg.VERIFY_KEYS, "m_idx", "m_member", "m_grp", "m_want"),
)


def verify_check(conn: PgConnection, desireds: Sequence[Desired]) -> pg.Check:
    """:func:`verify_many` as a :class:`~governance.provisioners.postgres.Check`, for
    :func:`~governance.provisioners.postgres.apply` to run right after its COMMIT (a prepared
    statement: see :class:`~governance.provisioners.postgres.Prepared`)."""
    direct: list[Desired] = []
    index: dict[tuple[str, ObjectRef], int] = {}
    owners: list[list[int]] = []  # per desired: its indexes in `direct`

    def slot(item: Desired) -> int:
        key = (item.principal, item.obj)
        if key not in index:
            index[key] = len(direct)
            direct.append(item)
        return index[key]

    rows: dict[str, list] = {"m_idx": [], "m_member": [], "m_grp": [], "m_want": []}
    for i, desired in enumerate(desireds):
        if not desired.packaged:
            owners.append([slot(desired)])
            continue
        mine = [slot(Desired(desired.principal, desired.obj))]  # nothing held directly
        for pkg in desired.packages:
            mine.append(slot(Desired(pkg.name, pkg.obj, pkg.privileges.table, pkg.privileges.columns)))
        owners.append(mine)
        for name, want in [(pkg.name, True) for pkg in desired.packages] + [(n, False) for n in desired.stale]:
            rows["m_idx"].append(i)
            rows["m_member"].append(desired.principal)
            rows["m_grp"].append(name)
            rows["m_want"].append(want)
    query = _VERIFY_PREPARED.execute(conn, {**pg.verify_params(direct), **rows})

    def read(row: tuple | None) -> list[list[str]]:
        assert row is not None
        found = pg.verify_differences(direct, row[0] or [])
        out: list[list[str]] = [[line for j in mine for line in found[j]] for mine in owners]
        for i, group, want, exists, direct_member, inherits in row[1] or []:
            who, grp = display_name(desireds[i].principal), display_name(group)
            if want and not exists:
                continue  # the package's own verification says "role … does not exist"
            if want and not direct_member:
                out[i].append(f"{who} is not a member of package {grp}")
            elif want and not inherits:
                out[i].append(f"{who} is a member of package {grp} but does not inherit its privileges (NOINHERIT)")
            elif not want and direct_member:
                out[i].append(f"{who} is still a member of package {grp}")
        return out

    return pg.Check(query, read, _VERIFY_PREPARED)
