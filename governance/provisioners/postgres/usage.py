"""Who used which table: ``pg_stat_statements`` read, parsed and resolved (the last-used facts).

Knows no Django. The caller (``governance/services/usage.py``) keeps the previous reading's
counters and asks :func:`read_usage` for a new one; :func:`new_use` compares the two.

How a statement becomes (role, table) pairs, and why:

* **What PostgreSQL records.** ``pg_stat_statements`` keeps, per (user, database, query id), the
  normalised text (constants replaced by ``$n``) and how often it ran (``calls``). The user is the
  *current* user when the statement ran: after ``SET ROLE gov_u_analyst`` it is that role, in a JIT
  login's session the login, in a mapped person's own session their login. It keeps no time of
  use: new use is seen as ``calls`` growing between two readings (a key that vanished and came back
  with fewer calls, evicted in between, counts as used too), so a use is dated to the reading that
  first sees it, at most one snapshot interval late.
* **Parsed, never matched.** The text is parsed with PostgreSQL's own parser (pglast); every
  ``RangeVar`` is a relation the statement names, except the names of the statement's own CTEs.
  A text that does not parse (a statement of a newer server, a truncated one) is counted and left
  out, never guessed at.
* **Resolved like the server would.** A schema-qualified name is taken as written; an unqualified
  one is looked up along the user's ``search_path`` (its role-and-database, role, then database
  setting, else the server's default; ``$user`` is the user itself), first schema holding a
  relation of that name (a table, view, materialised view, partitioned or foreign table) wins.
* **Mapped to principals here, to grants by the caller.** The caller names the principal roles
  it knows on the source; :func:`read_usage` says, per statement user, which of them it is or is a
  member of with the right to use them (``pg_has_role(user, principal, 'MEMBER')``): a JIT login
  or a mapped login maps to the person's principal, a person's role to the portal Roles it belongs
  to. A package role (``SET ROLE gov_p_…``) maps to nobody: the statement cannot say which member
  ran it. Nor does a superuser (a member of every role) or the portal's own role.

What makes a source unable to tell is raised as :class:`UsageUnavailable` with a sentence for the
page: the extension missing in the database, the library not preloaded, or a portal role that may
not read other users' statements (``pg_read_all_stats``). ``stats_reset``
(``pg_stat_statements_info``, PostgreSQL 14+) tells the caller when the counters last restarted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import pglast
import psycopg2
import psycopg2.errors
from pglast import ast
from pglast.visitors import Visitor
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from ..errors import UsageUnavailable
from .applying import _require_idle, _rollback_quietly
from .classify import classify_error
from .values import ObjectRef

DEFAULT_SEARCH_PATH = '"$user", public'
_RELKINDS = ["r", "v", "m", "p", "f"]


@dataclass(frozen=True)
class StatementUse:
    """One (user, query id) of the database, its calls summed over top-level and nested rows."""

    userid: int
    user: str
    queryid: int
    calls: int
    relations: frozenset[ObjectRef]

    @property
    def key(self) -> str:
        return f"{self.userid}:{self.queryid}"


@dataclass(frozen=True)
class UsageReading:
    """One reading of the database's statements, on the server's clock."""

    read_at: dt.datetime
    stats_reset: dt.datetime | None
    statements: tuple[StatementUse, ...]
    # statement user -> the given principals it is, or may act as (MEMBER).
    principals_of: Mapping[str, frozenset[str]] = field(default_factory=dict)
    unparsed: int = 0

    def counters(self) -> dict[str, int]:
        return {s.key: s.calls for s in self.statements}


def relations_named(query: str) -> set[tuple[str | None, str]] | None:
    """The (schema or None, name) of every relation ``query`` names, its own CTEs left out; None
    when the text does not parse."""
    try:
        statements = pglast.parse_sql(query)
    except (pglast.parser.ParseError, RecursionError):
        return None
    found = _Names()
    for statement in statements:
        found(statement)
    return {(s, n) for s, n in found.names if s is not None or n not in found.ctes}


class _Names(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[tuple[str | None, str]] = set()
        self.ctes: set[str] = set()

    def visit_RangeVar(self, ancestors: Any, node: ast.RangeVar) -> None:
        if node.relname:
            self.names.add((node.schemaname or None, str(node.relname)))

    def visit_CommonTableExpr(self, ancestors: Any, node: ast.CommonTableExpr) -> None:
        if node.ctename:
            self.ctes.add(str(node.ctename))


def search_path_schemas(setting: str, user: str) -> list[str]:
    """The schemas of a ``search_path`` value in order (``$user`` replaced, quotes removed)."""
    out: list[str] = []
    for raw in _split_path(setting):
        name = user if raw == "$user" else raw
        if name and name not in out:
            out.append(name)
    return out


def _split_path(setting: str) -> list[str]:
    """Split ``a, "B c", $user`` on commas outside double quotes: unquoted names fold to lower
    case as PostgreSQL folds them, quoted ones are taken as written (``""`` is a quote)."""
    parts: list[str] = []
    part: list[str] = []
    quoted, i = False, 0
    while i < len(setting):
        ch = setting[i]
        if ch == '"':
            if quoted and setting[i + 1 : i + 2] == '"':
                part.append('"')
                i += 1
            else:
                quoted = not quoted
        elif ch == "," and not quoted:
            parts.append("".join(part))
            part = []
        elif quoted:
            part.append(ch)
        elif not ch.isspace():
            part.append(ch.lower())
        i += 1
    parts.append("".join(part))
    return parts


_EXTENSION_SQL = """
SELECT n.nspname,
       current_setting('server_version_num')::int,
       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
         OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'pg_stat_statements'
"""

_STATEMENTS_SQL = """
SELECT s.userid, pg_get_userbyid(s.userid), s.queryid, min(s.query), sum(s.calls)::bigint
  FROM {view} s
 WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND s.queryid IS NOT NULL
 GROUP BY s.userid, s.queryid
"""

# Per statement user: its search_path, the most specific setting first (role in this database,
# role anywhere, anyone in this database).
_SEARCH_PATH_SQL = """
SELECT r.rolname,
       (SELECT substr(c, length('search_path=') + 1)
          FROM pg_db_role_setting d, unnest(d.setconfig) AS c
         WHERE c LIKE 'search\\_path=%%'
           AND ((d.setrole = r.oid AND d.setdatabase = db.oid) OR (d.setrole = r.oid AND d.setdatabase = 0)
                OR (d.setrole = 0 AND d.setdatabase = db.oid))
         ORDER BY (d.setrole = 0), (d.setdatabase = 0) LIMIT 1)
  FROM pg_roles r, (SELECT oid FROM pg_database WHERE datname = current_database()) db
 WHERE r.rolname = ANY(%(users)s)
"""

_RELATIONS_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relname = ANY(%(names)s) AND c.relkind = ANY(%(kinds)s::"char"[])
"""

_PRINCIPALS_SQL = """
SELECT u.rolname, p.rolname FROM pg_roles u JOIN pg_roles p ON p.rolname = ANY(%(principals)s)
 WHERE u.rolname = ANY(%(users)s) AND NOT u.rolsuper AND pg_has_role(u.oid, p.oid, 'MEMBER')
"""


def read_usage(conn: PgConnection, *, principals: Collection[str] = (), ignore: Collection[str] = ()) -> UsageReading:
    """Read the statements of the connection's database, resolved to relations, in one read-only
    transaction. Statements of the roles in ``ignore`` (the portal's own) are left out.

    Raises :class:`UsageUnavailable` when the source cannot tell, a ProvisioningError when it does
    not answer or fails otherwise.
    """
    _require_idle(conn, "read_usage()")
    try:
        with conn.cursor() as cur:
            return _read(cur, principals, ignore)
    except psycopg2.errors.ObjectNotInPrerequisiteState:
        raise UsageUnavailable(
            "pg_stat_statements is installed but not loaded: the server needs"
            " shared_preload_libraries = 'pg_stat_statements' and a restart."
        ) from None
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise UsageUnavailable(
            f"the portal's role may not read pg_stat_statements ({str(exc).splitlines()[0]})."
        ) from None
    except psycopg2.Error as exc:
        raise classify_error(exc, statement="read_usage()") from exc
    finally:
        _rollback_quietly(conn)


def _read(cur: Any, principals: Collection[str], ignore: Collection[str]) -> UsageReading:
    cur.execute(_EXTENSION_SQL)
    row = cur.fetchone()
    if row is None:
        cur.execute("SELECT current_database()")
        raise UsageUnavailable(f"the pg_stat_statements extension is not installed in database {cur.fetchone()[0]}.")
    schema, version, may_read_all = row
    if not may_read_all:
        raise UsageUnavailable(
            "the portal's role cannot see other users' statements: it needs pg_read_all_stats"
            " (GRANT pg_read_all_stats TO the portal's role)."
        )
    stats_reset = None
    if version >= 140000:
        cur.execute(sql.SQL("SELECT stats_reset FROM {}").format(sql.Identifier(schema, "pg_stat_statements_info")))
        stats_reset = cur.fetchone()[0]
    cur.execute("SELECT now()")
    read_at = cur.fetchone()[0]
    cur.execute(sql.SQL(_STATEMENTS_SQL).format(view=sql.Identifier(schema, "pg_stat_statements")))
    raw = [r for r in cur.fetchall() if r[1] is not None and r[1] not in ignore]
    parsed: list[tuple[int, str, int, int, set[tuple[str | None, str]]]] = []
    unparsed = 0
    for userid, user, queryid, query, calls in raw:
        names = relations_named(query)
        if names is None:
            unparsed += 1
            continue
        parsed.append((userid, user, queryid, int(calls), names))
    users = sorted({p[1] for p in parsed})
    cur.execute(_SEARCH_PATH_SQL, {"users": users})
    paths = {user: search_path_schemas(setting or DEFAULT_SEARCH_PATH, user) for user, setting in cur.fetchall()}
    wanted = sorted({name for p in parsed for _, name in p[4]})
    cur.execute(_RELATIONS_SQL, {"names": wanted, "kinds": _RELKINDS})
    existing = {(s, n) for s, n in cur.fetchall()}
    statements = []
    for userid, user, queryid, calls, names in parsed:
        relations = frozenset(
            ObjectRef(*ref)
            for ref in (_resolve(schema, name, paths.get(user, []), existing) for schema, name in names)
            if ref is not None
        )
        statements.append(StatementUse(userid, user, queryid, calls, relations))
    principals_of: dict[str, set[str]] = {}
    if principals and users:
        cur.execute(_PRINCIPALS_SQL, {"principals": sorted(principals), "users": users})
        for user, principal in cur.fetchall():
            principals_of.setdefault(user, set()).add(principal)
    return UsageReading(
        read_at=read_at,
        stats_reset=stats_reset,
        statements=tuple(statements),
        principals_of={u: frozenset(p) for u, p in principals_of.items()},
        unparsed=unparsed,
    )


def _resolve(schema: str | None, name: str, path: list[str], existing: set[tuple[str, str]]) -> tuple[str, str] | None:
    if schema is not None:
        return (schema, name) if (schema, name) in existing else None
    for candidate in path:
        if (candidate, name) in existing:
            return candidate, name
    return None


def new_use(
    reading: UsageReading, previous: Mapping[str, int] | None, previous_reset: dt.datetime | None
) -> set[tuple[str, ObjectRef, str]]:
    """The (principal, relation, statement user) used since the ``previous`` counters, per
    :attr:`principals_of`.

    No previous counters: nothing is attributed (the counts cover an unknown time since the last
    reset); the reading is the baseline. Counters reset since (``stats_reset`` moved): every count
    is new. Otherwise a key whose calls differ from before, or that is new, was used.
    """
    if previous is None:
        return set()
    reset = reading.stats_reset is not None and reading.stats_reset != previous_reset
    used: set[tuple[str, ObjectRef, str]] = set()
    for statement in reading.statements:
        before = None if reset else previous.get(statement.key)
        if before is not None and before == statement.calls:
            continue
        for principal in reading.principals_of.get(statement.user, ()):
            used.update((principal, relation, statement.user) for relation in statement.relations)
    return used
