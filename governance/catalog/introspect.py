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

from governance import crypto
from governance.models import DatasetKind, DataSource
from governance.secrets import source_password

logger = logging.getLogger(__name__)

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
   AND (pg_catalog.cardinality(%(schemas)s::text[]) = 0 OR n.nspname = ANY(%(schemas)s::text[]))
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
    if source.username:
        params["user"] = source.username
    password = source_password(source)
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


def read_relations(conn: PgConnection, *, include_schemas: Sequence[str] = ()) -> list[RelationInfo]:
    """Every table, view, materialized view, partitioned and foreign table with its columns.

    `include_schemas` empty means every non-system schema. Relations come back ordered by schema
    and name, columns by ordinal.
    """
    with conn.cursor() as cur:
        cur.execute(CATALOG_QUERY, {"schemas": list(include_schemas)})
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
    for (schema, table), columns in wanted.items():
        try:
            report.values[(schema, table)] = sample_values(
                conn, schema=schema, table=table, columns=columns, limit=limit
            )
        except psycopg2.Error as exc:
            # Names may be hostile; %r keeps the log line on one line and unambiguous.
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            report.failed[(schema, table)] = reason
            logger.warning("catalog sync: could not sample %r.%r: %s", schema, table, reason)
            if conn.closed:
                raise
    return report
