"""Verifying what a target holds against a desired state, from DIRECT ACLs."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from .applying import (
    Check,
    Prepared,
    _guard_passes,
    _read,
)
from .planning import (
    _usage_guard,
)
from .values import (
    PRIVILEGE_ORDER,
    Desired,
    _order_privileges,
    display_name,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Verifying
# ---------------------------------------------------------------------------------------------

VERIFY_SQL = """
WITH pair AS (
    SELECT * FROM unnest(%(idx)s::int[], %(role)s::text[], %(schema)s::text[], %(name)s::text[],
                         %(need_usage)s::bool[]) AS p(idx, role, schema, name, need_usage)
), rel AS (
    SELECT p.idx, c.oid, c.relacl FROM pair p
    JOIN pg_catalog.pg_namespace n ON n.nspname = p.schema
    JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = p.name
), who AS (
    SELECT p.idx, r.oid FROM pair p JOIN pg_catalog.pg_roles r ON r.rolname = p.role
), held AS (
    SELECT rel.idx, NULL::text AS col, a.privilege_type AS priv, a.grantor
    FROM rel JOIN who USING (idx), pg_catalog.aclexplode(rel.relacl) a WHERE a.grantee = who.oid
    UNION
    SELECT rel.idx, att.attname::text, a.privilege_type, a.grantor
    FROM rel JOIN who USING (idx)
    JOIN pg_catalog.pg_attribute att ON att.attrelid = rel.oid AND att.attnum > 0 AND NOT att.attisdropped,
    pg_catalog.aclexplode(att.attacl) a
    WHERE a.grantee = who.oid
), have AS (
    SELECT DISTINCT idx, col, priv FROM held
), usage AS MATERIALIZED (
    -- Each schema's ACL exploded once (it holds an entry per package of its tables), not once per pair.
    SELECT n.nspname::text AS schema, a.grantee FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
    WHERE a.privilege_type = 'USAGE' AND n.nspname IN (SELECT schema FROM pair WHERE need_usage)
), want AS (
    SELECT * FROM unnest(%(widx)s::int[], %(wcol)s::text[], %(wpriv)s::text[]) AS w(idx, col, priv)
)
SELECT idx, 'missing', col, priv, NULL FROM (SELECT idx, col, priv FROM want EXCEPT SELECT idx, col, priv FROM have) m
UNION ALL
-- An unexpected privilege granted on another role's authority than ours (the table owner's, say)
-- survives our REVOKE: name that grantor, so that whoever reads the failure knows who must act.
SELECT u.idx, 'unexpected', u.col, u.priv, (
    SELECT string_agg(DISTINCT pg_catalog.pg_get_userbyid(h.grantor), ', '
                      ORDER BY pg_catalog.pg_get_userbyid(h.grantor)) FROM held h
    WHERE h.idx = u.idx AND h.col IS NOT DISTINCT FROM u.col AND h.priv = u.priv
      AND NOT pg_catalog.pg_has_role(h.grantor, 'USAGE'))
FROM (SELECT idx, col, priv FROM have EXCEPT SELECT idx, col, priv FROM want) u
UNION ALL
SELECT p.idx, 'no_table', NULL, NULL, NULL FROM pair p WHERE NOT EXISTS (SELECT 1 FROM rel WHERE rel.idx = p.idx)
UNION ALL
SELECT p.idx, 'no_role', NULL, NULL, NULL FROM pair p WHERE NOT EXISTS (SELECT 1 FROM who WHERE who.idx = p.idx)
UNION ALL
SELECT p.idx, 'no_usage', NULL, NULL, NULL FROM pair p WHERE p.need_usage AND NOT EXISTS (
    SELECT 1 FROM usage u, who WHERE who.idx = p.idx AND u.schema = p.schema AND u.grantee = who.oid)
"""


def _priv_rank(priv: str | None) -> int:
    return PRIVILEGE_ORDER.index(priv) if priv in PRIVILEGE_ORDER else len(PRIVILEGE_ORDER)


def verify(conn: PgConnection, desired: Desired) -> list[str]:
    """Differences between ``desired`` and the DIRECT privileges of the principal on the object.

    Inherited privileges (PUBLIC, group roles) are ignored on purpose: they are not the portal's to
    grant or revoke. Empty list = verified. See :func:`verify_many`.
    """
    return verify_many(conn, [desired])[0]


def verify_many(conn: PgConnection, desireds: Sequence[Desired]) -> list[list[str]]:
    """:func:`verify` for many (principal, object) pairs in ONE query; one list per pair, in order.
    Packaged desired states are verified by :func:`governance.provisioners.pg_packages.verify_many`.

    The desired (privilege) and (column, privilege) pairs are ``unnest``-ed arrays tagged with the
    pair's index, the actual ones come from ``aclexplode`` of the tables' and columns' ACLs for the
    principals' oids, compared with EXCEPT both ways (a query per pair would be ~15x slower).
    """
    return verify_check(conn, desireds).run(conn, "verify()")


def verify_params(desireds: Sequence[Desired]) -> dict[str, list[Any]]:
    """The parameters of :data:`VERIFY_SQL` (its rows: index, kind, column, privilege, grantors)."""
    if any(d.packaged for d in desireds):
        raise ValueError("packaged desired states are verified by pg_packages.verify_many()")
    idx: list[int] = []
    widx: list[int] = []
    wcol: list[str | None] = []
    wpriv: list[str] = []
    for i, desired in enumerate(desireds):
        idx.append(i)
        for priv in _order_privileges(desired.table_privileges):
            widx.append(i)
            wcol.append(None)
            wpriv.append(priv)
        for column in sorted(desired.column_privileges):
            for priv in _order_privileges(desired.column_privileges[column]):
                widx.append(i)
                wcol.append(column)
                wpriv.append(priv)
    params: dict[str, list[Any]] = {
        "idx": idx,
        "role": [d.principal for d in desireds],
        "schema": [d.obj.schema for d in desireds],
        "name": [d.obj.name for d in desireds],
        "need_usage": [not d.empty for d in desireds],
        "widx": widx,
        "wcol": wcol,
        "wpriv": wpriv,
    }
    return params


def verify_differences(desireds: Sequence[Desired], rows: Sequence[Sequence[Any]]) -> list[list[str]]:
    """The differences per desired state, from the rows of :func:`verify_query`."""
    by_pair: list[list[tuple[str, str | None, str | None, str | None]]] = [[] for _ in desireds]
    for i, kind, col, priv, grantors in rows:
        by_pair[i].append((kind, col, priv, grantors))
    return [_differences(desired, found) for desired, found in zip(desireds, by_pair, strict=True)]


VERIFY_KEYS = ("idx", "role", "schema", "name", "need_usage", "widx", "wcol", "wpriv")
_VERIFY_PREPARED = Prepared.of(
    "gov_verify_v1",
    sql.SQL(
        "SELECT coalesce(json_agg(json_build_array(v.a, v.b, v.c, v.d, v.e)), '[]') FROM ({}) AS v(a, b, c, d, e)"
    ).format(sql.SQL(VERIFY_SQL)),
    VERIFY_KEYS,
)


def verify_check(conn: PgConnection, desireds: Sequence[Desired]) -> Check:
    """:func:`verify_many` as a :class:`Check`: one row, the rows of the verification as JSON."""
    query = _VERIFY_PREPARED.execute(conn, verify_params(desireds))
    return Check(query, lambda row: verify_differences(desireds, _json_rows(row)), _VERIFY_PREPARED)


def _json_rows(row: tuple[Any, ...] | None) -> list[list[Any]]:
    """The JSON array of rows a :class:`Check` query returns (psycopg2 decodes json already)."""
    return list(row[0]) if row and row[0] else []


def _differences(desired: Desired, rows: list[tuple[str, str | None, str | None, str | None]]) -> list[str]:
    who = display_name(desired.principal)
    kinds = {kind for kind, *_ in rows}
    if "no_table" in kinds or "no_role" in kinds:
        # Nothing can be held on a table or by a role that does not exist: fine when nothing is wanted.
        if desired.empty:
            return []
        out = []
        if "no_table" in kinds:
            out.append(f"table {desired.obj} does not exist")
        if "no_role" in kinds:
            out.append(f"role {who} does not exist")
        return out
    problems: list[tuple[int, str, int, str]] = []
    for kind, col, priv, grantors in rows:
        if kind == "no_usage":
            problems.append((0, "", -1, f"missing USAGE on schema {display_name(desired.obj.schema)} for {who}"))
            continue
        on = f" ({display_name(col)})" if col is not None else ""
        by = (
            f" (granted by {grantors}: the portal's role cannot revoke it; {grantors} or a superuser must)"
            if grantors
            else ""
        )
        problems.append(
            (
                1 if kind == "missing" else 2,
                col or "",
                _priv_rank(priv),
                f"{kind} {priv}{on} on {desired.obj} for {who}{by}",
            )
        )
    return [message for *_, message in sorted(problems)]


def verify_schema_usage(conn: PgConnection, principal: str, schema: str, present: bool) -> list[str]:
    """Whether ``principal`` holds USAGE on ``schema`` directly, as expected."""
    with _read(conn, "verify_schema_usage()") as cur:
        has = _guard_passes(cur, _usage_guard(principal, schema, present=True).query)
    if has == present:
        return []
    state = "missing" if present else "unexpected"
    return [f"{state} USAGE on schema {display_name(schema)} for {display_name(principal)}"]


def verify_membership(conn: PgConnection, member: str, group: str, present: bool) -> list[str]:
    """Whether ``member`` is (``present``) or is not a direct member of ``group`` (pg_auth_members)."""
    query = (
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m"
        " JOIN pg_catalog.pg_roles g ON g.oid = m.roleid JOIN pg_catalog.pg_roles r ON r.oid = m.member"
        " WHERE g.rolname = %(group)s AND r.rolname = %(member)s),"
        " EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %(member)s),"
        " EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %(group)s)"
    )
    with _read(conn, "verify_membership()") as cur:
        cur.execute(query, {"member": member, "group": group})
        is_member, member_exists, group_exists = cur.fetchone()
    if is_member == present:
        return []
    if present:
        out = [
            f"role {display_name(r)} does not exist"
            for r, ok in ((member, member_exists), (group, group_exists))
            if not ok
        ]
        return out or [f"missing membership of {display_name(member)} in {display_name(group)}"]
    return [f"unexpected membership of {display_name(member)} in {display_name(group)}"]


def verify_role(
    conn: PgConnection, name: str, present: bool, *, valid_until: datetime | None = None, login: bool | None = None
) -> list[str]:
    """Whether role ``name`` exists (``present``), and when it does, its expiry and LOGIN attribute."""
    query = "SELECT rolcanlogin, rolvaliduntil FROM pg_catalog.pg_roles WHERE rolname = %(name)s"
    with _read(conn, "verify_role()") as cur:
        cur.execute(query, {"name": name})
        row = cur.fetchone()
    who = display_name(name)
    if row is None:
        return [f"role {who} does not exist"] if present else []
    if not present:
        return [f"role {who} still exists"]
    out = []
    if login is not None and bool(row[0]) != login:
        out.append(f"role {who} {'cannot' if login else 'can'} log in")
    if valid_until is not None and row[1] != valid_until:
        out.append(f"role {who} is valid until {row[1]}, expected {valid_until.isoformat()}")
    return out
