"""Observing many roles at once for the reconciler, and the target's CONNECT posture."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import psycopg2
import psycopg2.extensions
from psycopg2.extensions import connection as PgConnection

from .applying import (
    _read,
    _require_idle,
    _rollback_quietly,
)
from .classify import (
    classify_error,
)
from .values import (
    ObjectRef,
    Privileges,
    display_name,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Observing (reconciler)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObservedState:
    """What the target holds for a set of roles, read from its catalog (direct privileges only).

    ``privileges[principal][object]`` are raw direct ACL entries (not normalised: a table SELECT
    and a column SELECT held together both show). ``memberships[member]`` are the groups the role is
    a direct member of; ``schema_usage[principal]`` the schemas it holds USAGE on directly.
    """

    existing: frozenset[str]
    privileges: Mapping[str, Mapping[ObjectRef, Privileges]]
    memberships: Mapping[str, frozenset[str]]
    schema_usage: Mapping[str, frozenset[str]]
    # Access package roles observed (every role with the package prefix given to observe()).
    packages: frozenset[str] = frozenset()
    # Objects owned by an observed role: object -> owner (an owner's ACL entry is not a grant).
    owners: Mapping[ObjectRef, str] = field(default_factory=dict, compare=False)

    def privileges_of(self, principal: str, obj: ObjectRef) -> Privileges:
        """Held DIRECTLY by ``principal`` on ``obj``."""
        return self.privileges.get(principal, {}).get(obj, Privileges())

    def packages_of(self, principal: str, obj: ObjectRef | None = None) -> list[str]:
        """The access packages ``principal`` is a direct member of (holding something on ``obj``)."""
        return sorted(
            g
            for g in self.memberships.get(principal, ())
            if g in self.packages and (obj is None or obj in self.privileges.get(g, {}))
        )

    def effective(self, principal: str) -> dict[ObjectRef, Privileges]:
        """What ``principal`` holds directly plus through its access packages, per object."""
        held = dict(self.privileges.get(principal, {}))
        for group in self.packages_of(principal):
            for obj, privs in self.privileges.get(group, {}).items():
                held[obj] = held[obj] | privs if obj in held else privs
        return held


# One statement, two halves. Roles named in %(names)s are found through the name index and joined to
# the catalog rows that name them (the planner knows how many names it got). Roles named with
# %(prefix)s are found by their name prefix, which the planner cannot estimate (it guesses one
# role): joined, it put the roles on the outer side of nested loops and re-read every ACL once per
# package role (20 s for 1,000 packages, measured), so that half filters each catalog row on its
# role's name (pg_get_userbyid, a cache lookup) with no join at all. %(acls)s and %(members)s switch
# the ACL and ownership branches and the membership branches on or off, and an empty half is not
# run: these are one-time filters. Memberships come aggregated, one row per member (a person may
# be in 10,000 packages: one array is far cheaper to fetch than 10,000 rows); 'O' rows are the
# relations an observed role owns.
_OBSERVE_SQL = """
SELECT 'R', r.rolname::text, NULL::text, NULL::text, NULL::text, NULL::text, NULL::text[]
FROM pg_catalog.pg_roles r
WHERE r.rolname = ANY(%(names)s::name[])
   OR (%(prefix)s <> '' AND left(r.rolname::text, length(%(prefix)s)) = %(prefix)s)
UNION ALL
SELECT 'M', r.rolname::text, NULL, NULL, NULL, NULL, array_agg(pg_catalog.pg_get_userbyid(m.roleid)::text)
FROM pg_catalog.pg_roles r JOIN pg_catalog.pg_auth_members m ON m.member = r.oid
WHERE %(members)s AND cardinality(%(names)s::name[]) > 0 AND r.rolname = ANY(%(names)s::name[])
GROUP BY r.rolname
UNION ALL
SELECT 'S', r.rolname::text, n.nspname::text, NULL, NULL, a.privilege_type, NULL
FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a, pg_catalog.pg_roles r
WHERE %(acls)s AND cardinality(%(names)s::name[]) > 0
  AND n.nspacl IS NOT NULL AND a.privilege_type = 'USAGE' AND r.oid = a.grantee
  AND r.rolname = ANY(%(names)s::name[])
UNION ALL
SELECT 'T', r.rolname::text, n.nspname::text, c.relname::text, NULL, a.privilege_type, NULL
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
     pg_catalog.aclexplode(c.relacl) a, pg_catalog.pg_roles r
WHERE %(acls)s AND cardinality(%(names)s::name[]) > 0
  AND c.relacl IS NOT NULL AND r.oid = a.grantee AND r.rolname = ANY(%(names)s::name[])
UNION ALL
SELECT 'C', r.rolname::text, n.nspname::text, c.relname::text, att.attname::text, a.privilege_type, NULL
FROM pg_catalog.pg_attribute att JOIN pg_catalog.pg_class c ON c.oid = att.attrelid
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
     pg_catalog.aclexplode(att.attacl) a, pg_catalog.pg_roles r
WHERE %(acls)s AND cardinality(%(names)s::name[]) > 0
  AND att.attacl IS NOT NULL AND att.attnum > 0 AND NOT att.attisdropped AND r.oid = a.grantee
  AND r.rolname = ANY(%(names)s::name[])
UNION ALL
SELECT 'O', r.rolname::text, n.nspname::text, c.relname::text, NULL, NULL, NULL
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles r ON r.oid = c.relowner
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE %(acls)s AND cardinality(%(names)s::name[]) > 0 AND r.rolname = ANY(%(names)s::name[])
UNION ALL
SELECT 'M', w.rolname, NULL, NULL, NULL, NULL, array_agg(pg_catalog.pg_get_userbyid(m.roleid)::text)
FROM pg_catalog.pg_auth_members m, LATERAL (SELECT pg_catalog.pg_get_userbyid(m.member)::text AS rolname) w
WHERE %(members)s AND %(prefix)s <> '' AND left(w.rolname, length(%(prefix)s)) = %(prefix)s
GROUP BY w.rolname
UNION ALL
SELECT 'S', w.rolname, n.nspname::text, NULL, NULL, a.privilege_type, NULL
FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a,
     LATERAL (SELECT pg_catalog.pg_get_userbyid(a.grantee)::text AS rolname) w
WHERE %(acls)s AND %(prefix)s <> '' AND n.nspacl IS NOT NULL AND a.privilege_type = 'USAGE'
  AND left(w.rolname, length(%(prefix)s)) = %(prefix)s
UNION ALL
SELECT 'T', w.rolname, n.nspname::text, c.relname::text, NULL, a.privilege_type, NULL
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
     pg_catalog.aclexplode(c.relacl) a, LATERAL (SELECT pg_catalog.pg_get_userbyid(a.grantee)::text AS rolname) w
WHERE %(acls)s AND %(prefix)s <> '' AND c.relacl IS NOT NULL AND left(w.rolname, length(%(prefix)s)) = %(prefix)s
UNION ALL
SELECT 'C', w.rolname, n.nspname::text, c.relname::text, att.attname::text, a.privilege_type, NULL
FROM pg_catalog.pg_attribute att JOIN pg_catalog.pg_class c ON c.oid = att.attrelid
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
     pg_catalog.aclexplode(att.attacl) a, LATERAL (SELECT pg_catalog.pg_get_userbyid(a.grantee)::text AS rolname) w
WHERE %(acls)s AND %(prefix)s <> '' AND att.attacl IS NOT NULL AND att.attnum > 0 AND NOT att.attisdropped
  AND left(w.rolname, length(%(prefix)s)) = %(prefix)s
UNION ALL
SELECT 'O', w.rolname, n.nspname::text, c.relname::text, NULL, NULL, NULL
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
     LATERAL (SELECT pg_catalog.pg_get_userbyid(c.relowner)::text AS rolname) w
WHERE %(acls)s AND %(prefix)s <> '' AND left(w.rolname, length(%(prefix)s)) = %(prefix)s
"""


def observe(
    conn: PgConnection,
    principals: Collection[str],
    *,
    packages: str = "",
    prefix: str = "",
    acls: bool = True,
    memberships: bool = True,
    batch_size: int = 5_000,
) -> ObservedState:
    """Direct table, column and schema privileges, memberships and existence of ``principals`` and,
    with ``packages`` (the package role prefix, e.g. ``gov_p_``), of every access package role;
    with ``prefix``, of every role named with it (e.g. ``gov_``: the packages, the managed roles and
    the JIT logins of a source). ``acls=False`` leaves out privileges and owned objects,
    ``memberships=False`` memberships (the reconciler reads the ACLs of a whole source once and the
    memberships of its principals chunk by chunk).

    ONE catalog query (``aclexplode`` over pg_class, pg_attribute, pg_namespace, plus pg_auth_members
    and pg_roles), streamed through a server-side (named) cursor ``batch_size`` rows at a time, so
    memory holds the result being built and one batch, never the whole result twice.
    """
    if prefix and packages and not packages.startswith(prefix):
        raise ValueError("the package prefix must start with the observed prefix")
    names = sorted(set(principals))
    existing: set[str] = set()
    groups_of: dict[str, frozenset[str]] = {}
    usage: dict[str, set[str]] = {}
    owned: dict[tuple[str, str], str] = {}
    # Keyed by plain tuples while streaming (cheap); ObjectRef values are made once per object.
    tables: dict[str, dict[tuple[str, str], set[str]]] = {}
    columns: dict[str, dict[tuple[str, str], dict[str, set[str]]]] = {}
    _require_idle(conn, "observe()")
    try:
        with conn.cursor(name=f"gov_observe_{secrets.token_hex(4)}") as cur:
            cur.itersize = batch_size
            cur.execute(
                _OBSERVE_SQL,
                {
                    "names": names,
                    "prefix": prefix or packages,
                    "acls": acls,
                    "members": memberships,
                },
            )
            for kind, role, schema, rel, col, priv, groups in cur:
                if kind == "T":
                    tables.setdefault(role, {}).setdefault((schema, rel), set()).add(priv)
                elif kind == "C":
                    columns.setdefault(role, {}).setdefault((schema, rel), {}).setdefault(col, set()).add(priv)
                elif kind == "R":
                    existing.add(role)
                elif kind == "M":
                    groups_of[role] = frozenset(groups)
                elif kind == "O":
                    owned[(schema, rel)] = role
                else:
                    usage.setdefault(role, set()).add(schema)
    except psycopg2.Error as exc:
        _rollback_quietly(conn)
        raise classify_error(exc, statement="observe()") from exc
    _rollback_quietly(conn)
    refs: dict[tuple[str, str], ObjectRef] = {}
    # Thousands of packages hold one of a handful of distinct privilege sets: one value each.
    interned: dict[tuple[frozenset[str], tuple[tuple[str, frozenset[str]], ...]], Privileges] = {}
    privileges: dict[str, Mapping[ObjectRef, Privileges]] = {}
    for role in set(tables) | set(columns):
        role_tables = tables.get(role, {})
        role_columns = columns.get(role, {})
        held: dict[ObjectRef, Privileges] = {}
        for key in role_tables.keys() | role_columns.keys():
            ref = refs.get(key)
            if ref is None:
                ref = refs[key] = ObjectRef(*key)
            cols = role_columns.get(key)
            table = frozenset(role_tables.get(key, ()))
            col_key = tuple(sorted((c, frozenset(p)) for c, p in cols.items())) if cols else ()
            privs = interned.get((table, col_key))
            if privs is None:
                privs = interned[(table, col_key)] = Privileges(table, dict(col_key))
            held[ref] = privs
        privileges[role] = MappingProxyType(held)
    owners = {refs.get(key) or ObjectRef(*key): role for key, role in owned.items()}
    return ObservedState(
        existing=frozenset(existing),
        privileges=MappingProxyType(privileges),
        memberships=MappingProxyType(groups_of),
        schema_usage=MappingProxyType({p: frozenset(s) for p, s in usage.items()}),
        packages=frozenset(r for r in existing if packages and r.startswith(packages)),
        owners=MappingProxyType(owners),
    )


_CONNECT_POSTURE_SQL = """
SELECT coalesce(array_agg(datname::text ORDER BY datname)
                FILTER (WHERE pg_catalog.has_database_privilege('public', oid, 'CONNECT')), '{}'),
       pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CONNECT WITH GRANT OPTION'),
       pg_catalog.current_database()::text,
       current_user::text,
       coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false),
       coalesce((SELECT r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false)
FROM pg_catalog.pg_database WHERE datallowconn
"""


@dataclass(frozen=True)
class Posture:
    """The target's set-up as the portal's own login sees it (one catalog query): warnings for
    operators about CONNECT, and what that login is. A superuser (or BYPASSRLS) login can do anything
    on the cluster, far more than provisioning needs (docs/security.md asks for CREATEROLE only)."""

    warnings: list[str]
    login: str
    superuser: bool
    bypassrls: bool

    def as_dict(self) -> dict[str, object]:
        return {"name": self.login, "superuser": self.superuser, "bypassrls": self.bypassrls}


def connect_posture(conn: PgConnection) -> list[str]:
    """What stands between a role the portal manages and the cluster's other databases, as
    warnings for operators (empty: nothing). PUBLIC's CONNECT on a database lets every role of the
    cluster, each JIT login included, connect to it (docs/security.md has the DBA revoke it); and
    the portal's role needs CONNECT WITH GRANT OPTION on the governed database to let its roles in
    once PUBLIC's is gone. One catalog query."""
    return posture(conn).warnings


def posture(conn: PgConnection) -> Posture:
    """:func:`connect_posture`'s warnings and the portal login's own attributes, in one query."""
    with _read(conn, "the databases' CONNECT privileges") as cur:
        cur.execute(_CONNECT_POSTURE_SQL)
        public, may_grant, current, login, superuser, bypassrls = cur.fetchone()
    warnings = []
    if public:
        names = ", ".join(display_name(name) for name in public)
        warnings.append(
            f"PUBLIC may connect to database(s) {names}: every role of the cluster, the portal's JIT logins "
            "included, can log in there; revoke PUBLIC's CONNECT (docs/security.md)"
        )
    if not may_grant:
        warnings.append(
            f"the portal's role may not pass on CONNECT to database {display_name(current)} (it lacks the grant "
            "option): the roles it manages cannot log in once PUBLIC's CONNECT is revoked (docs/security.md)"
        )
    return Posture(warnings=warnings, login=login, superuser=bool(superuser), bypassrls=bool(bypassrls))
