"""The exact aggregates, computed inside the source database: only a count, a sum or per-category
counts come back, never a row (docs/privacy.md#differentially-private-aggregates).

In SQL, before aggregating: values are clamped to the declared bounds, and each privacy unit keeps
at most k of its rows (`row_number() OVER (PARTITION BY unit)`, the rows kept chosen at random so
that which rows count is not the owner's ordering). Sums run in `numeric` (exact decimal
arithmetic), so a float's rounding cannot move a sum further than the bounds allow. Every
identifier is composed with psycopg2.sql; the filter value and the bounds are parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg2
from django.conf import settings
from psycopg2 import sql

from governance.catalog.introspect import connection_params
from governance.models import DataSource


@dataclass(frozen=True)
class AggregateSpec:
    """One validated query: what to aggregate on which table, bounded how."""

    schema: str
    table: str
    kind: str
    k: int
    unit_column: str = ""
    column: str = ""
    lower: Decimal | None = None
    upper: Decimal | None = None
    categories: list[str] = field(default_factory=list)
    filter_column: str = ""
    filter_value: str = ""


@dataclass(frozen=True)
class Exact:
    """The source's exact answer: it stays in the portal process and is never stored or shown."""

    count: int = 0
    total: Decimal = Decimal(0)
    bins: dict[str, int] = field(default_factory=dict)


def compose(spec: AggregateSpec) -> tuple[sql.Composed, dict[str, Any]]:
    """The bounded aggregate query for `spec` and its parameters."""
    params: dict[str, Any] = {"k": spec.k}
    conditions: list[sql.Composable] = []
    if spec.filter_column:
        conditions.append(sql.SQL("{}::text = %(filter)s").format(sql.Identifier(spec.filter_column)))
        params["filter"] = spec.filter_value
    value: sql.Composable = sql.SQL("NULL::numeric")
    if spec.kind in ("sum", "mean"):
        conditions.append(sql.SQL("{} IS NOT NULL").format(sql.Identifier(spec.column)))
        value = sql.SQL("LEAST(GREATEST({}::numeric, %(lower)s), %(upper)s)").format(sql.Identifier(spec.column))
        params |= {"lower": spec.lower, "upper": spec.upper}
    group: sql.Composable = sql.SQL("NULL::text")
    if spec.kind == "histogram":
        group = sql.SQL("{}::text").format(sql.Identifier(spec.column))
        params["categories"] = list(spec.categories)
    if spec.unit_column:
        rank = sql.SQL("row_number() OVER (PARTITION BY {} ORDER BY random())").format(sql.Identifier(spec.unit_column))
    else:  # each row is its own unit: it contributes itself, once
        rank = sql.SQL("1")
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    inner = sql.SQL("SELECT {value} AS v, {group} AS g, {rank} AS rn FROM {table}{where}").format(
        value=value, group=group, rank=rank, table=sql.Identifier(spec.schema, spec.table), where=where
    )
    if spec.kind == "histogram":
        outer = sql.SQL(
            "SELECT g, count(*) FROM ({inner}) AS bounded WHERE rn <= %(k)s AND g = ANY(%(categories)s) GROUP BY g"
        )
    else:
        outer = sql.SQL("SELECT count(*), coalesce(sum(v), 0) FROM ({inner}) AS bounded WHERE rn <= %(k)s")
    return outer.format(inner=inner), params


def run(source: DataSource, spec: AggregateSpec) -> Exact:
    """Run the bounded query on the source as the portal's role, in a read-only transaction with the
    privacy statement_timeout, and return the exact aggregate (psycopg2.Error on failure)."""
    query, params = compose(spec)
    conn = psycopg2.connect(**connection_params(source))
    try:
        conn.set_session(readonly=True, autocommit=False)
        with conn.cursor() as cur:
            cur.execute("SET LOCAL statement_timeout = %s", [int(settings.PRIVACY_QUERY_TIMEOUT_MS)])
            cur.execute(query, params)
            rows = cur.fetchall()
        conn.rollback()
    finally:
        conn.close()
    if spec.kind == "histogram":
        return Exact(bins={str(g): int(n) for g, n in rows})
    count, total = rows[0]
    return Exact(count=int(count), total=Decimal(total))
