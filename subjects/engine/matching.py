"""Which rows of a table are a data subject's, as SQL composed with psycopg2.sql (no Django here).

A table's rows match the subject **directly** when one of its identifier columns holds one of the
subject's identifier values, or **through a relationship** when its key columns point at rows of
another table of the same database that match (``orders.customer_id -> customers.id``), to a
bounded depth. Every name is a ``sql.Identifier`` and every value a ``sql.Literal``: a table called
``x"; DROP TABLE y; --`` or an e-mail address holding quotes is data, never SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from psycopg2 import sql

MAX_DEPTH = 3
CASE_INSENSITIVE = frozenset({"email"})

Table = tuple[str, str]  # (schema, name), exactly as PostgreSQL spells them


@dataclass(frozen=True)
class Identifier:
    """A column of a table that identifies a data subject, and what kind of identifier it holds."""

    column: str
    kind: str


@dataclass(frozen=True)
class Link:
    """``table.columns`` references ``referenced.referenced_columns`` (a foreign key or a declared one)."""

    table: Table
    columns: tuple[str, ...]
    referenced: Table
    referenced_columns: tuple[str, ...]

    def describe(self) -> str:
        left = f"{self.table[1]}.{','.join(self.columns)}"
        right = f"{self.referenced[1]}.{','.join(self.referenced_columns)}"
        return f"{left} → {right}"


@dataclass
class Graph:
    """What one database holds for matching: identifier columns per table, and links between tables."""

    identifiers: dict[Table, list[Identifier]] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)

    def links_from(self, table: Table) -> list[Link]:
        return [link for link in self.links if link.table == table]


@dataclass(frozen=True)
class Match:
    """The WHERE condition selecting the subject's rows of a table, and how it was reached."""

    condition: sql.Composable
    paths: tuple[str, ...]


def _direct(table: Table, graph: Graph, values: Mapping[str, str]) -> tuple[list[sql.Composable], list[str]]:
    conditions: list[sql.Composable] = []
    paths: list[str] = []
    for ident in graph.identifiers.get(table, []):
        value = values.get(ident.kind)
        if value is None:
            continue
        column = sql.Identifier(ident.column)
        if ident.kind in CASE_INSENSITIVE:
            conditions.append(sql.SQL("lower({}::text) = lower({})").format(column, sql.Literal(value)))
        else:
            conditions.append(sql.SQL("{}::text = {}").format(column, sql.Literal(value)))
        paths.append(f"direct: {ident.column} ({ident.kind})")
    return conditions, paths


def match(table: Table, graph: Graph, values: Mapping[str, str], depth: int = MAX_DEPTH) -> Match | None:
    """The subject's rows of `table`, or None when nothing of it can identify the subject."""
    return _match(table, graph, values, depth, frozenset({table}))


def _match(table: Table, graph: Graph, values: Mapping[str, str], depth: int, seen: frozenset[Table]) -> Match | None:
    conditions, paths = _direct(table, graph, values)
    if depth > 0:
        for link in graph.links_from(table):
            if link.referenced in seen:
                continue  # a cycle (self-reference, mutual keys) adds nothing the direct match has not
            parent = _match(link.referenced, graph, values, depth - 1, seen | {link.referenced})
            if parent is None:
                continue
            keys = sql.SQL(", ").join(sql.Identifier(c) for c in link.columns)
            refs = sql.SQL(", ").join(sql.Identifier(c) for c in link.referenced_columns)
            conditions.append(
                sql.SQL("({keys}) IN (SELECT {refs} FROM {parent} WHERE {cond})").format(
                    keys=keys, refs=refs, parent=sql.Identifier(*link.referenced), cond=parent.condition
                )
            )
            for path in parent.paths:
                then = "" if path.startswith("direct") else f", then {path.removeprefix('via ')}"
                paths.append(f"via {link.describe()}{then}")
    if not conditions:
        return None
    condition = sql.SQL("({})").format(sql.SQL(" OR ").join(conditions)) if len(conditions) > 1 else conditions[0]
    return Match(condition=condition, paths=tuple(dict.fromkeys(paths)))


def children_first(tables: Sequence[Table], links: Sequence[Link]) -> list[Table]:
    """`tables` ordered so that a table referencing another comes before it (delete children first).
    Cycles are broken in the given order."""
    pending = list(dict.fromkeys(tables))
    ordered: list[Table] = []
    while pending:
        for table in pending:
            # A table may go when no pending table (other than itself) still references it.
            if not any(link.referenced == table and link.table in pending and link.table != table for link in links):
                break
        else:
            table = pending[0]
        ordered.append(table)
        pending.remove(table)
    return ordered
