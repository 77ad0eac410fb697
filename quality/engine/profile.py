"""A profile per column (no Django here): null share, distinct count, and for columns that may show
values, their range and most common values.

Values are shown ONLY for columns the caller marks as safe (``withhold_values`` False: no PII tag,
suggested or confirmed or inherited) and, for the most common values, only when the column has few
distinct values (a category such as a country or a status, not an identifier). Of a withheld
column the profile holds counts only: its values are never selected, so they cannot be kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psycopg2 import sql

if TYPE_CHECKING:
    from .runner import Limits

# Types whose min and max mean something to a reader (and are not free text).
ORDERED_TYPES = (
    "smallint", "integer", "bigint", "numeric", "real", "double precision", "date", "money",
    "timestamp", "time", "interval",
)  # fmt: skip


@dataclass(frozen=True)
class ProfileColumn:
    name: str
    data_type: str
    withhold_values: bool


@dataclass
class ColumnProfile:
    name: str
    rows: int
    nulls: int
    distinct: int
    minimum: str | None = None
    maximum: str | None = None
    top_values: list[tuple[str | None, int]] = field(default_factory=list)
    values_withheld: bool = True


def _ordered(data_type: str) -> bool:
    return data_type.startswith(ORDERED_TYPES)


def profile_columns(
    fetch: Callable[..., list[tuple[Any, ...]]],
    schema: str,
    table: str,
    columns: Sequence[ProfileColumn],
    sample: float | None,
    limits: Limits,
) -> list[ColumnProfile]:
    relation: sql.Composable = sql.Identifier(schema, table)
    if sample is not None:
        relation = sql.SQL("{} TABLESAMPLE SYSTEM ({}) REPEATABLE (0)").format(relation, sql.Literal(sample))
    items: list[sql.Composable] = [sql.SQL("count(*)")]
    for column in columns:
        col = sql.Identifier(column.name)
        items += [sql.SQL("count({})").format(col), sql.SQL("count(DISTINCT {})").format(col)]
        if not column.withhold_values and _ordered(column.data_type):
            items += [sql.SQL("min({})::text").format(col), sql.SQL("max({})::text").format(col)]
    row = fetch(sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(items), relation))[0]
    total, i = int(row[0]), 1
    out: list[ColumnProfile] = []
    for column in columns:
        present, distinct = int(row[i]), int(row[i + 1])
        i += 2
        profile = ColumnProfile(column.name, total, total - present, distinct, values_withheld=column.withhold_values)
        if not column.withhold_values and _ordered(column.data_type):
            profile.minimum, profile.maximum = row[i], row[i + 1]
            i += 2
        if not column.withhold_values and 0 < distinct <= limits.top_values_max_distinct:
            col = sql.Identifier(column.name)
            top = fetch(
                sql.SQL("SELECT {0}::text, count(*) FROM {1} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT {2}").format(
                    col, relation, sql.Literal(limits.top_values)
                )
            )
            profile.top_values = [(value, int(count)) for value, count in top]
        out.append(profile)
    return out
