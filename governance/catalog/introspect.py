"""Read what a PostgreSQL data source holds: relations, their columns, and value samples for PII discovery.

This module talks to the *target* database with psycopg2, never to the portal's database, and must
be called outside any portal transaction (network I/O; house rule 4). The session is read-only
(`default_transaction_read_only`), bounded by `statement_timeout` and `lock_timeout`, so that a sync
can neither change a target nor hang behind a long-held lock.

Identifiers are data here: every name read from `pg_catalog` is kept exactly as PostgreSQL stores it
and is only ever put back into SQL through `psycopg2.sql.Identifier`, so that a table called
`Order "Lines"; DROP TABLE x; --` in a schema called `Sales EU` is sampled like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from django.conf import settings
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from governance import crypto, progress
from governance.dynamic_credentials import source_login
from governance.models import DatasetKind, DataSource

logger = logging.getLogger(__name__)

# The stage a catalog sync reports while it samples column values, one relation at a time.
SAMPLING = "sampling relations for PII"

# Milliseconds. A catalog query on a healthy server takes milliseconds; a sample of a heavy view may
# take longer, and must not be allowed to run for ever. Overridable from settings (not required).
DEFAULT_STATEMENT_TIMEOUT_MS = 30_000
DEFAULT_LOCK_TIMEOUT_MS = 5_000
APPLICATION_NAME = "governance-catalog-sync"

RELKIND_TO_KIND: dict[str, str] = {
    "r": DatasetKind.TABLE.value,
    "v": DatasetKind.VIEW.value,
    "m": DatasetKind.MATERIALIZED_VIEW.value,
    "p": DatasetKind.PARTITIONED_TABLE.value,
    "f": DatasetKind.FOREIGN_TABLE.value,
}


@dataclass(frozen=True)
class ColumnInfo:
    """One live column as the target describes it."""

    name: str
    data_type: str  # format_type(): "character varying(255)", "numeric(12,2)", "Sales EU"."mood"...
    type_category: str  # pg_type.typcategory: S string, N numeric, D date/time, I network, A array...
    ordinal: int  # attnum, i.e. information_schema's ordinal_position (stable when other columns drop)
    is_nullable: bool
    description: str


@dataclass(frozen=True)
class RelationInfo:
    """A table-like object people can be granted access to."""

    schema: str
    name: str
    kind: str  # a DatasetKind value
    description: str
    columns: tuple[ColumnInfo, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.schema, self.name)


@dataclass
class SampleReport:
    """Values read per relation and column, and the relations whose sample query failed."""

    values: dict[tuple[str, str], dict[str, list[str | None]]] = field(default_factory=dict)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)


# One set-based query for every relation and its columns: the catalog of a warehouse with
# thousands of tables costs one round trip, not one per table. Partitions are left out (access is
# granted on the partitioned parent; listing every monthly partition would drown the catalog), as
# are the system schemas and other sessions' temporary schemas.
CATALOG_QUERY = """
SELECT n.nspname,
       c.relname,
       c.relkind::text,
       COALESCE(td.description, ''),
       a.attname,
       pg_catalog.format_type(a.atttypid, a.atttypmod),
       t.typcategory::text,
       a.attnum,
       NOT a.attnotnull,
       COALESCE(cd.description, '')
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_catalog.pg_description td
         ON td.objoid = c.oid AND td.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND td.objsubid = 0
  LEFT JOIN pg_catalog.pg_attribute a
         ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_catalog.pg_description cd
         ON cd.objoid = c.oid AND cd.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
        AND cd.objsubid = a.attnum
 WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
   AND NOT c.relispartition
   AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
   AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
   AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%%'
   AND CASE WHEN pg_catalog.cardinality(%(only_schemas)s::text[]) > 0
            THEN EXISTS (SELECT 1 FROM unnest(%(only_schemas)s::text[], %(only_names)s::text[]) AS k(s, r)
                          WHERE k.s = n.nspname AND k.r = c.relname)
            ELSE pg_catalog.cardinality(%(schemas)s::text[]) = 0 OR n.nspname = ANY(%(schemas)s::text[]) END
 ORDER BY n.nspname, c.relname, a.attnum
"""


def connection_params(source: DataSource) -> dict[str, Any]:
    """psycopg2.connect() keyword arguments for the source (password decrypted, never logged).

    Passed as keywords, not a hand-built DSN string: psycopg2 quotes every value, so a password
    holding spaces or quotes cannot change the meaning of the connection string.
    """
    statement_ms = int(getattr(settings, "TARGET_STATEMENT_TIMEOUT_MS", DEFAULT_STATEMENT_TIMEOUT_MS))
    lock_ms = int(getattr(settings, "TARGET_LOCK_TIMEOUT_MS", DEFAULT_LOCK_TIMEOUT_MS))
    params: dict[str, Any] = {
        "dbname": source.database,
        "port": source.port,
        "sslmode": source.sslmode,
        "connect_timeout": settings.TARGET_CONNECT_TIMEOUT,
        "application_name": APPLICATION_NAME,
        "options": (
            f"-c default_transaction_read_only=on -c statement_timeout={statement_ms} -c lock_timeout={lock_ms}"
        ),
    }
    if source.host:
        params["host"] = source.host
    user, password = source_login(source)  # a Vault-leased login for a vault-db: source
    if user:
        params["user"] = user
    if password:
        params["password"] = password
    if source.ssl_root_cert:
        params["sslrootcert"] = crypto.ca_bundle_path(source.ssl_root_cert)
    return params


@contextmanager
def connect(source: DataSource) -> Iterator[PgConnection]:
    """A read-only autocommit session on the source, closed on exit.

    Autocommit: each catalog or sample query is its own (read-only) transaction, so one failed
    sample (permission denied, an unpopulated materialized view, a timeout) does not poison the
    session for the next one, and no snapshot is held open on the target while we work.
    """
    conn = psycopg2.connect(**connection_params(source))
    try:
        conn.set_session(readonly=True, autocommit=True)
        yield conn
    finally:
        conn.close()


def read_relations(
    conn: PgConnection, *, include_schemas: Sequence[str] = (), only: Sequence[tuple[str, str]] = ()
) -> list[RelationInfo]:
    """Every table, view, materialized view, partitioned and foreign table with its columns.

    `include_schemas` empty means every non-system schema; `only` reads just these relations
    (schema, name) instead (what views read outside the catalogued schemas). Relations come back
    ordered by schema and name, columns by ordinal.
    """
    params = {
        "schemas": list(include_schemas),
        "only_schemas": [key[0] for key in only],
        "only_names": [key[1] for key in only],
    }
    with conn.cursor() as cur:
        cur.execute(CATALOG_QUERY, params)
        rows = cur.fetchall()
    relations: list[RelationInfo] = []
    current: tuple[str, str] | None = None
    head: tuple[str, str, str, str] | None = None
    columns: list[ColumnInfo] = []

    def flush() -> None:
        if head is not None:
            schema, name, relkind, description = head
            relations.append(
                RelationInfo(
                    schema=schema,
                    name=name,
                    kind=RELKIND_TO_KIND[relkind],
                    description=description,
                    columns=tuple(columns),
                )
            )

    for schema, name, relkind, rel_desc, attname, data_type, category, attnum, nullable, col_desc in rows:
        if (schema, name) != current:
            flush()
            current = (schema, name)
            head = (schema, name, relkind, rel_desc)
            columns = []
        if attname is not None:
            columns.append(
                ColumnInfo(
                    name=attname,
                    data_type=data_type,
                    type_category=category or "",
                    ordinal=int(attnum),
                    is_nullable=bool(nullable),
                    description=col_desc,
                )
            )
    flush()
    return relations


def sample_query(schema: str, table: str, columns: Sequence[str]) -> sql.Composed:
    """`SELECT "c1"::text, "c2"::text FROM "schema"."table" LIMIT %s`, every name an Identifier."""
    select_list = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns)
    return sql.SQL("SELECT {} FROM {} LIMIT %s").format(select_list, sql.Identifier(schema, table))


def sample_values(
    conn: PgConnection, *, schema: str, table: str, columns: Sequence[str], limit: int
) -> dict[str, list[str | None]]:
    """Up to `limit` values of each column, as text, from one query for the whole table."""
    if not columns or limit <= 0:
        return {}
    with conn.cursor() as cur:
        cur.execute(sample_query(schema, table, columns), (limit,))
        rows = cur.fetchall()
    return {name: [row[i] for row in rows] for i, name in enumerate(columns)}


def sample_relations(conn: PgConnection, wanted: dict[tuple[str, str], list[str]], *, limit: int) -> SampleReport:
    """Sample the wanted columns of each relation; a failure on one relation is recorded and skipped.

    Foreign tables are not sampled by the caller's choice (reading them reaches a third system), and
    a relation we may not read simply contributes no samples: discovery falls back to names.
    """
    report = SampleReport()
    total = len(wanted)
    for done, ((schema, table), columns) in enumerate(wanted.items()):
        progress.report(done, total, SAMPLING)
        try:
            report.values[(schema, table)] = sample_values(
                conn, schema=schema, table=table, columns=columns, limit=limit
            )
        except psycopg2.Error as exc:
            # Names may be hostile; %r keeps the log line on one line and unambiguous.
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            report.failed[(schema, table)] = reason
            # Debug only: the sync logs one summary line per source (governance.services.sync), not
            # one warning per unreadable table (a source of 1,000 unreadable tables is one line).
            logger.debug("catalog sync: could not sample %r.%r: %s", schema, table, reason)
            if conn.closed:
                raise
    progress.report(total, total, SAMPLING)
    return report


# --- lineage: what views read -------------------------------------------------------------------------

# Every relation and column a view's or materialized view's query references (its `_RETURN` rule's
# dependencies), for every view of the database: one round trip. A partition is reported as its
# partitioned root (only roots are catalogued). System relations are left out: they hold no
# governed data. `attname` is NULL for a reference to the relation as a whole (`t.*` in a function
# call, `row_to_json(t)`).
DEPENDENCY_QUERY = """
SELECT vn.nspname, v.relname, rn.nspname, r.relname, a.attname
  FROM pg_catalog.pg_rewrite rw
  JOIN pg_catalog.pg_class v ON v.oid = rw.ev_class
  JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace
  JOIN pg_catalog.pg_depend d
    ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = rw.oid
   AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> v.oid
  JOIN pg_catalog.pg_class r0 ON r0.oid = d.refobjid
  JOIN pg_catalog.pg_class r
    ON r.oid = CASE WHEN r0.relispartition THEN pg_catalog.pg_partition_root(r0.oid) ELSE r0.oid END
  JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
  LEFT JOIN pg_catalog.pg_attribute a
    ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid AND d.refobjsubid > 0
 WHERE v.relkind IN ('v', 'm') AND rw.rulename = '_RETURN'
   AND r.relkind IN ('r', 'v', 'm', 'p', 'f')
   AND rn.nspname NOT IN ('pg_catalog', 'information_schema')
 ORDER BY 1, 2, 3, 4, 5
"""

# The code a view runs that is not in its own text: the non-system functions its query calls, the
# functions behind the user-defined operators it uses, and the support functions of the
# user-defined aggregates it calls (an aggregate's own pg_proc row has no body: its transition and
# final functions do the work). Their bodies are invisible to pg_depend unless written as a
# SQL-standard body.
_CODE_OF = """
WITH refs AS ({refs}),
funcs AS (
    SELECT owner_a, owner_b, refobjid AS f FROM refs WHERE refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass
    UNION
    SELECT owner_a, owner_b, o.oprcode::oid FROM refs JOIN pg_catalog.pg_operator o ON o.oid = refs.refobjid
     WHERE refs.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass
),
expanded AS (
    SELECT owner_a, owner_b, f FROM funcs
    UNION
    SELECT owner_a, owner_b, x.fn
      FROM funcs JOIN pg_catalog.pg_aggregate a ON a.aggfnoid = funcs.f
     CROSS JOIN LATERAL unnest(ARRAY[a.aggtransfn::oid, a.aggfinalfn::oid, a.aggcombinefn::oid,
                                     a.aggserialfn::oid, a.aggdeserialfn::oid, a.aggmtransfn::oid,
                                     a.aggminvtransfn::oid, a.aggmfinalfn::oid]) AS x(fn)
)
SELECT DISTINCT e.owner_a, e.owner_b, e.f
  FROM expanded e
  JOIN pg_catalog.pg_proc p ON p.oid = e.f
  JOIN pg_catalog.pg_namespace pn ON pn.oid = p.pronamespace
 WHERE e.f <> 0 AND pn.nspname NOT IN ('pg_catalog', 'information_schema')
"""

VIEW_FUNCTIONS_QUERY = _CODE_OF.format(
    refs="""SELECT vn.nspname AS owner_a, v.relname AS owner_b, d.refclassid, d.refobjid
              FROM pg_catalog.pg_rewrite rw
              JOIN pg_catalog.pg_class v ON v.oid = rw.ev_class
              JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace
              JOIN pg_catalog.pg_depend d
                ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = rw.oid
             WHERE v.relkind IN ('v', 'm') AND rw.rulename = '_RETURN'"""
)

# Functions that matter to lineage: those views reach (above), what those call, and every SECURITY
# DEFINER function (it runs with its owner's privileges, so whoever may call it reads what it
# reads). The body is kept for languages whose source is text (not C symbols), to find the
# relations and functions it mentions.
FUNCTIONS_QUERY = """
SELECT p.oid, n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid),
       pg_catalog.pg_get_userbyid(p.proowner), p.prosecdef, l.lanname,
       CASE WHEN l.lanname IN ('c', 'internal') THEN '' ELSE COALESCE(p.prosrc, '') END,
       EXISTS (SELECT 1 FROM pg_catalog.aclexplode(COALESCE(p.proacl, pg_catalog.acldefault('f', p.proowner))) x
                WHERE x.grantee = 0 AND x.privilege_type = 'EXECUTE')
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_catalog.pg_language l ON l.oid = p.prolang
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND ((%(definers)s AND p.prosecdef) OR p.oid = ANY(%(oids)s::oid[]))
 ORDER BY 2, 3, 4
"""

# Relations a function's SQL-standard body (BEGIN ATOMIC / RETURN) depends on: recorded exactly.
FUNCTION_DEPENDENCY_QUERY = """
SELECT d.objid, rn.nspname, r.relname
  FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_class r ON r.oid = d.refobjid
  JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
 WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = ANY(%(oids)s::oid[])
   AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
   AND r.relkind IN ('r', 'v', 'm', 'p', 'f')
"""

# The code a SQL-standard body calls (functions, operators' functions, aggregates' functions).
FUNCTION_CALLS_QUERY = _CODE_OF.format(
    refs="""SELECT d.objid AS owner_a, NULL::text AS owner_b, d.refclassid, d.refobjid
              FROM pg_catalog.pg_depend d
             WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = ANY(%(oids)s::oid[])"""
)

# Every user-defined function by name: what a PL/pgSQL or classic SQL body may call by name.
FUNCTION_NAMES_QUERY = """
SELECT p.oid, n.nspname, p.proname
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_%%'
"""


@dataclass(frozen=True)
class FunctionInfo:
    """A function that views call or that runs as its owner (SECURITY DEFINER)."""

    oid: int
    schema: str
    name: str
    arguments: str
    owner: str
    security_definer: bool
    language: str
    body: str
    public_execute: bool
    depends_on: tuple[tuple[str, str], ...] = ()  # exact, from a SQL-standard body
    calls: tuple[int, ...] = ()  # exact, from a SQL-standard body: functions it runs

    @property
    def signature(self) -> str:
        return f"{self.schema}.{self.name}({self.arguments})"


@dataclass
class DependencyReport:
    """What every view of the database reads, the definitions of the views asked for, the functions."""

    # (view schema, view name) -> (relation schema, relation name) -> referenced column names
    reads: dict[tuple[str, str], dict[tuple[str, str], set[str]]] = field(default_factory=dict)
    calls: dict[tuple[str, str], set[int]] = field(default_factory=dict)  # view -> function oids
    definitions: dict[tuple[str, str], str] = field(default_factory=dict)
    functions: dict[int, FunctionInfo] = field(default_factory=dict)


def read_dependencies(conn: PgConnection) -> DependencyReport:
    """Which relations and columns every view reads, and which non-system functions it calls."""
    report = DependencyReport()
    with conn.cursor() as cur:
        cur.execute(DEPENDENCY_QUERY)
        for view_schema, view_name, schema, name, column in cur.fetchall():
            columns = report.reads.setdefault((view_schema, view_name), {}).setdefault((schema, name), set())
            if column is not None:
                columns.add(column)
        cur.execute(VIEW_FUNCTIONS_QUERY)
        for view_schema, view_name, oid in cur.fetchall():
            report.calls.setdefault((view_schema, view_name), set()).add(int(oid))
    return report


def read_view_definitions(conn: PgConnection, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """`pg_get_viewdef` of each view, printed under an empty search_path so that every relation and
    non-system function is schema-qualified (the tracer needs to know exactly what each name is)."""
    if not keys:
        return {}
    with conn.cursor() as cur:
        cur.execute("SET search_path = ''")
        try:
            cur.execute(
                """SELECT n.nspname, c.relname, pg_catalog.pg_get_viewdef(c.oid, true)
                     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                     JOIN unnest(%(schemas)s::text[], %(names)s::text[]) AS k(s, r)
                       ON k.s = n.nspname AND k.r = c.relname
                    WHERE c.relkind IN ('v', 'm')""",
                {"schemas": [k[0] for k in keys], "names": [k[1] for k in keys]},
            )
            return {(schema, name): definition for schema, name, definition in cur.fetchall()}
        finally:
            cur.execute("RESET search_path")


def read_functions(conn: PgConnection, oids: Sequence[int], *, definers: bool = False) -> dict[int, FunctionInfo]:
    """The functions `oids` (and, with `definers`, every SECURITY DEFINER function), with what the
    SQL-standard bodies among them depend on and call."""
    with conn.cursor() as cur:
        cur.execute(FUNCTIONS_QUERY, {"oids": list(oids), "definers": definers})
        rows = cur.fetchall()
        found = [int(r[0]) for r in rows]
        depends: dict[int, list[tuple[str, str]]] = {}
        calls: dict[int, set[int]] = {}
        if found:
            cur.execute(FUNCTION_DEPENDENCY_QUERY, {"oids": found})
            for oid, schema, name in cur.fetchall():
                depends.setdefault(int(oid), []).append((schema, name))
            cur.execute(FUNCTION_CALLS_QUERY, {"oids": found})
            for oid, _, callee in cur.fetchall():
                if int(callee) != int(oid):
                    calls.setdefault(int(oid), set()).add(int(callee))
    return {
        int(oid): FunctionInfo(
            oid=int(oid),
            schema=schema,
            name=name,
            arguments=arguments,
            owner=owner,
            security_definer=bool(definer),
            language=language,
            body=body,
            public_execute=bool(public),
            depends_on=tuple(sorted(set(depends.get(int(oid), [])))),
            calls=tuple(sorted(calls.get(int(oid), set()))),
        )
        for oid, schema, name, arguments, owner, definer, language, body, public in rows
    }


def read_function_names(conn: PgConnection) -> list[tuple[int, str, str]]:
    """(oid, schema, name) of every user-defined function: what a body may call by name."""
    with conn.cursor() as cur:
        cur.execute(FUNCTION_NAMES_QUERY)
        return [(int(oid), schema, name) for oid, schema, name in cur.fetchall()]


def read_relation_keys(conn: PgConnection) -> list[tuple[str, str]]:
    """(schema, name) of every table-like relation of the database: what a function body may mention."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND NOT c.relispartition
                  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
                  AND n.nspname NOT LIKE 'pg\\_temp\\_%%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%%'"""
        )
        return [(schema, name) for schema, name in cur.fetchall()]
