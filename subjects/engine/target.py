"""What a data-subject request does on a source database (psycopg2 only; no Django here).

- :func:`foreign_keys` reads the source's foreign keys from ``pg_constraint``.
- :func:`count` and :func:`rows` read, in ONE ``REPEATABLE READ READ ONLY`` transaction (the session
  is read-only already: ``default_transaction_read_only`` in the connection's options) with a
  ``statement_timeout``, and end with ROLLBACK: a preview or an export never writes.
- :func:`apply` changes ONE table in ONE transaction: it counts the subject's rows again and refuses
  (rolls back) when the count moved from the preview's by more than the tolerance; deletes them, or
  sets the given columns to NULL on exactly them; then proves it (no matching row left, or every
  updated row's columns NULL) before COMMIT. A step that cannot prove itself is rolled back.

Conditions come from :mod:`subjects.engine.matching` (names as identifiers, values as literals).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errorcodes
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from .matching import Link, Table

APPLICATION_NAME = "governance-subject-requests"
ERASE, ANONYMISE, RECTIFY = "erase", "anonymise", "rectify"

FOREIGN_KEYS = """
SELECT con.conname, n.nspname, c.relname,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, pos)
              JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.pos),
       rn.nspname, rc.relname,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(num, pos)
              JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.pos)
  FROM pg_catalog.pg_constraint con
  JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_class rc ON rc.oid = con.confrelid
  JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace
 WHERE con.contype = 'f'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
 ORDER BY n.nspname, c.relname, con.conname
"""


class TargetError(Exception):
    """The source refused or could not answer; the message is one line, never a value."""


@dataclass(frozen=True)
class ForeignKey:
    name: str
    link: Link


@dataclass(frozen=True)
class Step:
    """One table's change: `action` on the rows `condition` selects, expected about `expected` rows."""

    table: Table
    action: str  # ERASE, ANONYMISE or RECTIFY
    condition: sql.Composable
    expected: int
    columns: tuple[str, ...] = ()  # ANONYMISE: the columns set to NULL
    values: tuple[tuple[str, str | None], ...] = ()  # RECTIFY: (column, new value as text, or None: NULL)


@dataclass
class StepOutcome:
    recounted: int | None = None
    affected: int = 0
    verified: bool = False
    refused: str = ""  # the count moved beyond the tolerance: nothing done
    error: str = ""  # the source failed the step: rolled back, nothing done


@dataclass
class Rows:
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "pgerror", None) or exc or type(exc).__name__).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _connect(params: dict[str, Any]) -> psycopg2.extensions.connection:
    try:
        conn = psycopg2.connect(**{**params, "application_name": APPLICATION_NAME})
    except psycopg2.Error as exc:
        raise TargetError(f"Could not connect to the source: {_one_line(exc)}") from None
    conn.autocommit = False
    return conn


def _timeout(cur: Any, timeout_ms: int) -> None:
    cur.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(max(int(timeout_ms), 1))))


def _read(params: dict[str, Any], timeout_ms: int, work: Any) -> Any:
    conn = _connect(params)
    try:
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        with conn.cursor() as cur:
            _timeout(cur, timeout_ms)
            try:
                return work(cur)
            except psycopg2.errors.QueryCanceled:
                raise TargetError(f"The source did not answer within {timeout_ms} ms.") from None
            except psycopg2.Error as exc:
                raise TargetError(_one_line(exc)) from None
    finally:
        if not conn.closed:
            conn.rollback()  # read-only: nothing to commit, and nothing is
            conn.close()


def foreign_keys(params: dict[str, Any], *, timeout_ms: int = 30_000) -> list[ForeignKey]:
    """Every foreign key of the source's schemas, columns in the key's order."""

    def work(cur: Any) -> list[ForeignKey]:
        cur.execute(FOREIGN_KEYS)
        return [
            ForeignKey(name, Link((schema, table), tuple(cols), (rschema, rtable), tuple(rcols)))
            for name, schema, table, cols, rschema, rtable, rcols in cur.fetchall()
        ]

    return list(_read(params, timeout_ms, work))


def count(params: dict[str, Any], plans: Sequence[tuple[Table, sql.Composable]], *, timeout_ms: int) -> list[int]:
    """The number of rows each (table, condition) selects, all from one snapshot."""

    def work(cur: Any) -> list[int]:
        out = []
        for table, condition in plans:
            cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(*table), condition))
            out.append(int(cur.fetchone()[0]))
        return out

    return list(_read(params, timeout_ms, work))


def rows(params: dict[str, Any], plans: Sequence[tuple[Table, sql.Composable]], *, timeout_ms: int) -> list[Rows]:
    """The rows each (table, condition) selects, every column, from one snapshot (an access request)."""

    def work(cur: Any) -> list[Rows]:
        out = []
        for table, condition in plans:
            cur.execute(sql.SQL("SELECT * FROM {} WHERE {}").format(sql.Identifier(*table), condition))
            out.append(Rows([d[0] for d in cur.description], cur.fetchall()))
        return out

    return list(_read(params, timeout_ms, work))


def _rectify(cur: Any, table: sql.Composable, step: Step) -> tuple[int, bool]:
    """UPDATE the matched rows to the new values; (rows updated, every one of them now holds them)."""
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(column), sql.Literal(value)) for column, value in step.values
    )
    cur.execute(sql.SQL("UPDATE {} SET {} WHERE {} RETURNING ctid::text").format(table, assignments, step.condition))
    touched = [r[0] for r in cur.fetchall()]
    holds = sql.SQL(" AND ").join(
        sql.SQL("{} IS NOT DISTINCT FROM {}").format(sql.Identifier(column), sql.Literal(value))
        for column, value in step.values
    )
    cur.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE ctid = ANY({}::tid[]) AND ({})").format(
            table, sql.Literal(touched), holds
        )
    )
    return len(touched), int(cur.fetchone()[0]) == len(touched)


def _valueless(exc: psycopg2.Error) -> str:
    """What the source refused, without its message (a bad cast's message quotes the new value)."""
    code = getattr(exc, "pgcode", None) or ""
    try:
        name = psycopg2.errorcodes.lookup(code).lower().replace("_", " ")
    except KeyError:
        name = code or type(exc).__name__
    diag = getattr(exc, "diag", None)
    constraint = getattr(diag, "constraint_name", None) if diag is not None else None
    if code.startswith("22"):
        return f"A new value does not fit its column's type ({name})"
    if code.startswith("23"):
        return f"A new value breaks a constraint of the table ({name}{': ' + constraint if constraint else ''})"
    return f"The source refused the change ({name})"


def apply(params: dict[str, Any], step: Step, *, timeout_ms: int, tolerance: int) -> StepOutcome:
    """Erase or anonymise the subject's rows of one table in one transaction, proven before COMMIT."""
    outcome = StepOutcome()
    conn = _connect(params)
    table = sql.Identifier(*step.table)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE")
            _timeout(cur, timeout_ms)
            try:
                cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table, step.condition))
                outcome.recounted = int(cur.fetchone()[0])
                if abs(outcome.recounted - step.expected) > tolerance:
                    outcome.refused = (
                        f"{outcome.recounted} matching rows now, {step.expected} at the preview"
                        f" (tolerance {tolerance}): nothing changed."
                    )
                    conn.rollback()
                    return outcome
                if step.action == ERASE:
                    cur.execute(sql.SQL("DELETE FROM {} WHERE {}").format(table, step.condition))
                    outcome.affected = cur.rowcount
                    cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(table, step.condition))
                    outcome.verified = int(cur.fetchone()[0]) == 0
                elif step.action == ANONYMISE and step.columns:
                    assignments = sql.SQL(", ").join(
                        sql.SQL("{} = NULL").format(sql.Identifier(c)) for c in step.columns
                    )
                    cur.execute(
                        sql.SQL("UPDATE {} SET {} WHERE {} RETURNING ctid::text").format(
                            table, assignments, step.condition
                        )
                    )
                    touched = [r[0] for r in cur.fetchall()]
                    outcome.affected = len(touched)
                    still = sql.SQL(" OR ").join(
                        sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in step.columns
                    )
                    cur.execute(
                        sql.SQL("SELECT count(*) FROM {} WHERE ctid = ANY({}::tid[]) AND ({})").format(
                            table, sql.Literal(touched), still
                        )
                    )
                    outcome.verified = int(cur.fetchone()[0]) == 0
                elif step.action == RECTIFY and step.values:
                    outcome.affected, outcome.verified = _rectify(cur, table, step)
                else:
                    raise TargetError(f"Unknown action {step.action!r}, or nothing to change.")
            except psycopg2.errors.QueryCanceled:
                conn.rollback()
                outcome.error = f"The source did not answer within {timeout_ms} ms: rolled back."
                return outcome
            except psycopg2.Error as exc:
                conn.rollback()
                outcome.error = f"{_valueless(exc) if step.action == RECTIFY else _one_line(exc)} (rolled back)"
                return outcome
            if outcome.affected != outcome.recounted or not outcome.verified:
                conn.rollback()
                outcome.error = (
                    f"Changed {outcome.affected} rows of {outcome.recounted} counted, verified: {outcome.verified}:"
                    " rolled back."
                )
                outcome.affected, outcome.verified = 0, False
                return outcome
            conn.commit()
    finally:
        conn.close()
    return outcome
