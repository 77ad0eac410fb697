"""Data quality checks as SQL (no Django here): what each kind measures, and the one query that
measures many of them at once.

Every check measures *failing rows* out of *examined rows* (or, for freshness and row count, one
number), so a result never holds a value of the data: a check that fails says how many rows fail,
never which. Names are always ``psycopg2.sql.Identifier`` and constants ``Literal``; nothing is
formatted into SQL text by hand.

The row checks of one table (completeness, uniqueness, allowed values, range, pattern) are measured
by ONE scan: ``SELECT count(*), count(*) FILTER (WHERE <fails 1>), ... FROM t [TABLESAMPLE ...]``,
so 100 checks on a table cost about one pass over it instead of 100 (bench/bench_quality.py).
Checks that need another shape (freshness, row count, referential, owner-written SQL) run as their
own statement in the same read-only snapshot.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg2 import sql

# The kinds, and which of them the combined scan measures.
COMPLETENESS = "completeness"  # failing: NULL values of the column
UNIQUENESS = "uniqueness"  # failing: rows whose (non-NULL) value is not the first of its kind
ALLOWED_VALUES = "allowed_values"  # failing: non-NULL values outside the allowed set
RANGE = "range"  # failing: non-NULL values below min or above max
PATTERN = "pattern"  # failing: non-NULL values whose text does not match the regular expression
FRESHNESS = "freshness"  # value: seconds since the column's newest timestamp
ROW_COUNT = "row_count"  # value: the number of rows (with its change since the last run)
REFERENTIAL = "referential"  # failing: non-NULL values absent from a column of another table
CUSTOM_SQL = "custom_sql"  # failing: the rows the owner's (reviewed) query returns, counted by the portal

KINDS = (COMPLETENESS, UNIQUENESS, ALLOWED_VALUES, RANGE, PATTERN, FRESHNESS, ROW_COUNT, REFERENTIAL, CUSTOM_SQL)
SCANNED = frozenset({COMPLETENESS, UNIQUENESS, ALLOWED_VALUES, RANGE, PATTERN})
# Kinds whose answer does not change under sampling by more than noise (fractions of rows).
SAMPLEABLE = frozenset({COMPLETENESS, ALLOWED_VALUES, RANGE, PATTERN})

MAX_ALLOWED_VALUES = 1000
MAX_PATTERN_LENGTH = 500


class CheckDefinitionError(ValueError):
    """A check's parameters are unusable; ``field`` names the parameter."""

    def __init__(self, message: str, field: str = "params") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class CheckSpec:
    """One check to measure: ``key`` identifies it in the results (the portal's check id)."""

    key: int
    kind: str
    column: str = ""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measurement:
    """What one check measured. ``value`` is the number compared with the threshold: the failing
    fraction for row checks, seconds for freshness, rows for row count, the count for custom SQL."""

    key: int
    value: float | None = None
    failing: int | None = None
    examined: int | None = None
    error: str = ""


def validate(kind: str, column: str, params: dict[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """The check's parameters, normalised; raises CheckDefinitionError naming what is wrong."""
    if kind not in KINDS:
        raise CheckDefinitionError(f"{kind!r} is not a kind of check ({', '.join(KINDS)}).", "kind")
    if kind in (ROW_COUNT, CUSTOM_SQL):
        if column:
            raise CheckDefinitionError(
                f"A {kind} check applies to the whole dataset: leave the column empty.", "column"
            )
    elif column not in columns:
        raise CheckDefinitionError(f"{column!r} is not a column of this dataset.", "column")
    clean: dict[str, Any] = {}
    if kind == ALLOWED_VALUES:
        values = params.get("values")
        if not isinstance(values, list) or not values or len(values) > MAX_ALLOWED_VALUES:
            raise CheckDefinitionError(f"values: a list of 1 to {MAX_ALLOWED_VALUES} allowed values.", "params.values")
        if not all(isinstance(v, (str, int, float, bool)) for v in values):
            raise CheckDefinitionError("values: only text, numbers and true/false.", "params.values")
        clean["values"] = [str(v) for v in values]
    elif kind == RANGE:
        low, high = params.get("min"), params.get("max")
        for name, bound in (("min", low), ("max", high)):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float, str))):
                raise CheckDefinitionError(f"{name}: a number, a date or empty.", f"params.{name}")
        if low is None and high is None:
            raise CheckDefinitionError("A range needs min, max or both.", "params.min")
        clean.update({"min": low, "max": high})
    elif kind == PATTERN:
        pattern = params.get("pattern")
        if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_LENGTH:
            raise CheckDefinitionError(
                f"pattern: a regular expression of 1 to {MAX_PATTERN_LENGTH} characters.", "params.pattern"
            )
        try:
            re.compile(pattern)
        except re.error as exc:
            raise CheckDefinitionError(f"pattern: not a regular expression ({exc}).", "params.pattern") from None
        clean["pattern"] = pattern
    elif kind == ROW_COUNT:
        change = params.get("max_change_fraction")
        if change is not None:
            if isinstance(change, bool) or not isinstance(change, (int, float)) or change < 0:
                raise CheckDefinitionError(
                    "max_change_fraction: a fraction >= 0 (0.5 = 50%).", "params.max_change_fraction"
                )
            clean["max_change_fraction"] = float(change)
    elif kind == REFERENTIAL:
        for name in ("schema", "table", "column"):
            value = params.get(name)
            if not isinstance(value, str) or not value or len(value.encode()) > 63:
                raise CheckDefinitionError(f"{name}: the referenced {name}'s name.", f"params.{name}")
            clean[name] = value
    elif kind == CUSTOM_SQL:
        clean["sql"] = custom_sql(params.get("sql"))
    return clean


def check_threshold(kind: str, threshold: Any) -> float:
    """The threshold as a number of the kind's unit; raises CheckDefinitionError."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold != threshold:
        raise CheckDefinitionError("threshold: a number.", "threshold")
    value = float(threshold)
    if kind in SCANNED or kind == REFERENTIAL:
        if not 0 <= value <= 1:
            raise CheckDefinitionError("threshold: the largest share of failing rows, from 0 to 1.", "threshold")
    elif kind == FRESHNESS:
        if value <= 0:
            raise CheckDefinitionError("threshold: the largest age in seconds, above 0.", "threshold")
    elif value < 0:
        raise CheckDefinitionError("threshold: a number of rows, 0 or more.", "threshold")
    return value


def passes(kind: str, value: float, threshold: float) -> bool:
    """Whether a measured value meets its threshold (row count: at least; everything else: at most)."""
    return value >= threshold if kind == ROW_COUNT else value <= threshold


def custom_sql(text: Any) -> str:
    """The owner's query if it is ONE plain SELECT (parsed with pglast) of the failing rows. The
    portal only counts what it returns (``SELECT count(*) FROM (<query>) q``), so no value of the data
    ever reaches the portal; it runs only in a read-only transaction with a time limit, and only once
    someone other than its author reviewed it."""
    from pglast import ast, parse_sql
    from pglast.parser import ParseError

    if not isinstance(text, str) or not text.strip() or len(text) > 10_000:
        raise CheckDefinitionError("sql: one SELECT of the failing rows.", "params.sql")
    try:
        statements = parse_sql(text)
    except ParseError as exc:
        raise CheckDefinitionError(f"sql: does not parse ({exc}).", "params.sql") from None
    if len(statements) != 1 or not isinstance(statements[0].stmt, ast.SelectStmt):
        raise CheckDefinitionError("sql: exactly one SELECT statement.", "params.sql")
    select = statements[0].stmt
    if getattr(select, "intoClause", None) is not None or getattr(select, "lockingClause", None):
        raise CheckDefinitionError("sql: no SELECT INTO and no FOR UPDATE/SHARE.", "params.sql")
    writes = _writes(select(skip_none=True))
    if writes:
        raise CheckDefinitionError(f"sql: a check only reads ({', '.join(sorted(writes))} found).", "params.sql")
    return text.strip().rstrip(";")


_WRITES = {"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"}


def _writes(tree: Any) -> set[str]:
    """The data-modifying statements anywhere in a parse tree (a writable CTE hides one in a SELECT)."""
    found: set[str] = set()
    if isinstance(tree, dict):
        if tree.get("@") in _WRITES:
            found.add(str(tree["@"]).removesuffix("Stmt").upper())
        for value in tree.values():
            found |= _writes(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            found |= _writes(value)
    return found


# --- the combined scan ----------------------------------------------------------------------------------


def _fails(spec: CheckSpec) -> sql.Composable:
    """The condition under which one row fails the row check `spec`."""
    col = sql.Identifier(spec.column)
    if spec.kind == COMPLETENESS:
        return sql.SQL("{} IS NULL").format(col)
    if spec.kind == ALLOWED_VALUES:
        values = sql.SQL(", ").join(sql.Literal(v) for v in spec.params["values"])
        return sql.SQL("{}::text NOT IN ({})").format(col, values)
    if spec.kind == RANGE:
        parts = []
        if spec.params.get("min") is not None:
            parts.append(sql.SQL("{} < {}").format(col, sql.Literal(spec.params["min"])))
        if spec.params.get("max") is not None:
            parts.append(sql.SQL("{} > {}").format(col, sql.Literal(spec.params["max"])))
        return sql.SQL(" OR ").join(parts)
    if spec.kind == PATTERN:
        return sql.SQL("{}::text !~ {}").format(col, sql.Literal(spec.params["pattern"]))
    raise AssertionError(spec.kind)


def scan_query(schema: str, table: str, specs: Sequence[CheckSpec], sample_percent: float | None) -> sql.Composed:
    """``SELECT count(*), <per check: failing, examined> FROM t [TABLESAMPLE SYSTEM (p)]``.

    Uniqueness counts ``count(col) - count(DISTINCT col)`` (duplicates beyond the first of each value),
    which the scan can also do in the same pass; it is never sampled (a sample hides duplicates).
    """
    items: list[sql.Composable] = [sql.SQL("count(*)")]
    for spec in specs:
        col = sql.Identifier(spec.column)
        if spec.kind == UNIQUENESS:
            items.append(sql.SQL("count({0}) - count(DISTINCT {0})").format(col))
            items.append(sql.SQL("count({})").format(col))
        elif spec.kind == COMPLETENESS:
            items.append(sql.SQL("count(*) FILTER (WHERE {})").format(_fails(spec)))
            items.append(sql.SQL("count(*)"))
        else:
            items.append(sql.SQL("count(*) FILTER (WHERE {} IS NOT NULL AND ({}))").format(col, _fails(spec)))
            items.append(sql.SQL("count({})").format(col))
    sample = sql.SQL("")
    if sample_percent is not None:
        sample = sql.SQL(" TABLESAMPLE SYSTEM ({}) REPEATABLE (0)").format(sql.Literal(sample_percent))
    return sql.SQL("SELECT {} FROM {}{}").format(sql.SQL(", ").join(items), sql.Identifier(schema, table), sample)


def read_scan(specs: Sequence[CheckSpec], row: Sequence[Any]) -> list[Measurement]:
    out = []
    for i, spec in enumerate(specs):
        failing, examined = int(row[1 + 2 * i] or 0), int(row[2 + 2 * i] or 0)
        fraction = failing / examined if examined else 0.0
        out.append(Measurement(spec.key, value=fraction, failing=failing, examined=examined))
    return out


# --- the checks with a shape of their own ---------------------------------------------------------------


def single_query(schema: str, table: str, spec: CheckSpec) -> sql.Composed:
    """The one statement measuring a freshness, row count, referential or custom SQL check."""
    relation = sql.Identifier(schema, table)
    if spec.kind == FRESHNESS:
        return sql.SQL("SELECT extract(epoch FROM (now() - max({})::timestamptz))::float8, count({}) FROM {}").format(
            sql.Identifier(spec.column), sql.Identifier(spec.column), relation
        )
    if spec.kind == ROW_COUNT:
        return sql.SQL("SELECT count(*) FROM {}").format(relation)
    if spec.kind == REFERENTIAL:
        ref = sql.Identifier(spec.params["schema"], spec.params["table"])
        col, ref_col = sql.Identifier(spec.column), sql.Identifier(spec.params["column"])
        return sql.SQL(
            "SELECT count(*) FILTER (WHERE t.{col} IS NOT NULL AND NOT EXISTS"
            " (SELECT 1 FROM {ref} r WHERE r.{ref_col} = t.{col})), count(t.{col}) FROM {rel} t"
        ).format(col=col, ref=ref, ref_col=ref_col, rel=relation)
    if spec.kind == CUSTOM_SQL:
        # The owner's text runs as a subquery whose rows are counted: no value is ever fetched.
        return sql.SQL("SELECT count(*) FROM ({}) q").format(sql.SQL(spec.params["sql"]))
    raise AssertionError(spec.kind)


def read_single(spec: CheckSpec, row: Sequence[Any] | None) -> Measurement:
    if spec.kind == FRESHNESS:
        age, present = (row or (None, 0))[:2]
        if not present or age is None:
            return Measurement(spec.key, error="The column holds no timestamp: freshness is unknown.")
        return Measurement(spec.key, value=max(0.0, float(age)))
    if spec.kind == ROW_COUNT:
        count = int(row[0]) if row else 0
        return Measurement(spec.key, value=float(count), examined=count)
    if spec.kind == REFERENTIAL:
        failing, examined = (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)
        return Measurement(spec.key, value=failing / examined if examined else 0.0, failing=failing, examined=examined)
    if spec.kind == CUSTOM_SQL:
        count = int(row[0]) if row else 0
        return Measurement(spec.key, value=float(count), failing=count)
    raise AssertionError(spec.kind)
