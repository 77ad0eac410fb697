"""Which base columns each column of a view computes from: the column-level half of lineage.

PostgreSQL records in `pg_depend` every relation and column a view's query references, in any
clause, but not which output column comes from which of them. This module reads the view's
definition (`pg_get_viewdef`, printed with an empty `search_path` so that every relation is
schema-qualified) with PostgreSQL's own parser (pglast) and follows each output column through
aliases, joins, subqueries, CTEs, set operations and expressions down to the columns it reads.

The result is checked against `pg_depend`: a traced column that PostgreSQL does not list as
referenced means the tracer misread the query, and that column falls back to "everything the view
reads". Whatever cannot be traced with certainty (a call to a user-defined function, a function in
FROM with no traceable arguments, a construct this module does not know) falls back the same way,
so a mistake can only make lineage broader, never narrower. Pure functions, no Django, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pglast
from pglast import ast

# Every column of the relation: a whole-row reference (`t.*`, `row_to_json(t)`), a relation read by a
# function, or a fallback. Expanded to the relation's columns by whoever knows them (the sync).
ALL_COLUMNS = "*"

RelKey = tuple[str, str]
# A recursive CTE is followed until a round adds nothing; far fewer rounds than this always suffice
# (each round must add a column read, and there are only so many).
MAX_RECURSION_ROUNDS = 1_000


@dataclass(frozen=True, order=True)
class ColRef:
    """A column of a relation of the same database, or ALL_COLUMNS of it."""

    schema: str
    relation: str
    column: str

    @property
    def key(self) -> RelKey:
        return (self.schema, self.relation)


@dataclass(frozen=True)
class ColumnLineage:
    name: str
    reads: frozenset[ColRef]
    exact: bool  # False: not traceable, judged by everything the view reads
    why: str = ""  # for inexact columns: what stopped the tracer


@dataclass(frozen=True)
class ViewLineage:
    columns: tuple[ColumnLineage, ...]
    problem: str = ""  # set when the whole definition could not be traced

    @property
    def status(self) -> str:
        if self.problem:
            return "opaque"
        return "traced" if all(c.exact for c in self.columns) else "partial"


class Untraceable(Exception):
    """The tracer cannot follow this part of the query with certainty."""


@dataclass
class _Derived:
    """What one expression computes from."""

    refs: set[ColRef] = field(default_factory=set)
    opaque: str = ""  # why it cannot be traced, if it cannot

    def add(self, other: _Derived) -> None:
        self.refs |= other.refs
        self.opaque = self.opaque or other.opaque


@dataclass
class _Item:
    """One entry of a FROM list: a relation, a subquery, a CTE, a function."""

    alias: str
    relation: RelKey | None = None  # a table or view: its columns are ColRefs
    # A subquery, CTE or function: its output columns in order. A list, not a dict: two output
    # columns may share a name, and a whole-row reference (`row_to_json(c.*)`) reads both.
    columns: list[tuple[str, _Derived]] | None = None

    def column(self, name: str, used: Mapping[RelKey, set[str]]) -> _Derived | None:
        if self.relation is not None:
            if name in used.get(self.relation, set()):
                return _Derived({ColRef(*self.relation, name)})
            return None
        assert self.columns is not None
        found = [d for n, d in self.columns if n == name]
        if not found:
            return None
        out = _Derived()
        for derived in found:  # SQL refuses an ambiguous name; if it seems so here, read them all
            out.add(derived)
        return out

    def whole_row(self) -> _Derived:
        if self.relation is not None:
            return _Derived({ColRef(*self.relation, ALL_COLUMNS)})
        out = _Derived()
        for _, derived in self.columns or ():
            out.add(derived)
        return out


@dataclass
class _Scope:
    items: list[_Item]
    parent: _Scope | None = None
    ctes: dict[str, list[tuple[str, _Derived]]] = field(default_factory=dict)

    def cte(self, name: str) -> list[tuple[str, _Derived]] | None:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.ctes:
                return scope.ctes[name]
            scope = scope.parent
        return None


def trace_view(
    definition: str,
    output_columns: Sequence[str],
    used: Mapping[RelKey, set[str]],
    opaque_reads: Iterable[RelKey] = (),
    casts_run_code: bool = False,
) -> ViewLineage:
    """The lineage of each output column of a view.

    `definition` is `pg_get_viewdef()` under an empty search_path; `output_columns` the view's
    columns in order; `used` what pg_depend lists as referenced (relation -> column names; an empty
    set for a relation referenced as a whole); `opaque_reads` the relations that the user-defined
    functions the view calls read: a column that calls one is judged by those too. With
    `casts_run_code` (the view depends on user-defined functions), every cast may be one that runs
    such a function (a cast from a user type prints as a plain `::text`), so a column that casts is
    judged like one that calls a function.
    """
    fallback = everything(used) | {ColRef(*key, ALL_COLUMNS) for key in opaque_reads}
    try:
        statements = pglast.parse_sql(definition)
        if len(statements) != 1 or not isinstance(statements[0].stmt, ast.SelectStmt):
            raise Untraceable("the definition is not a single SELECT")
        tracer = _Tracer(used, casts_run_code=casts_run_code)
        outputs = tracer.select(statements[0].stmt, None)
    except (Untraceable, pglast.parser.ParseError, RecursionError) as exc:
        why = str(exc) or type(exc).__name__
        return ViewLineage(
            columns=tuple(ColumnLineage(name, fallback, exact=False, why=why) for name in output_columns),
            problem=f"could not be traced column by column ({why})",
        )
    if len(outputs) != len(output_columns):
        why = f"the definition has {len(outputs)} output columns, the view {len(output_columns)}"
        return ViewLineage(
            columns=tuple(ColumnLineage(name, fallback, exact=False, why=why) for name in output_columns),
            problem=f"could not be traced column by column ({why})",
        )
    columns = []
    for name, (_, derived) in zip(output_columns, outputs, strict=True):
        stray = sorted(r for r in derived.refs if r.column != ALL_COLUMNS and r.column not in used.get(r.key, set()))
        if derived.opaque:
            columns.append(ColumnLineage(name, fallback, exact=False, why=derived.opaque))
        elif stray:  # the tracer misread the query: never narrower than PostgreSQL's own record
            columns.append(
                ColumnLineage(name, fallback, exact=False, why=f"{stray[0].column} is not among the columns read")
            )
        else:
            columns.append(ColumnLineage(name, frozenset(derived.refs), exact=True))
    return ViewLineage(columns=tuple(columns))


def everything(used: Mapping[RelKey, set[str]]) -> frozenset[ColRef]:
    """What an untraceable column is judged by: every column of every relation the view reads.

    Every column, not just those pg_depend lists: pg_depend records a whole-row reference (`t.*`
    passed to a function) as its own row only when no single column of `t` is referenced too, so
    the listed columns can be fewer than what the view can reach."""
    return frozenset(ColRef(*key, ALL_COLUMNS) for key in used)


def _is(node: Any, cls: type) -> bool:
    """isinstance() without narrowing: pglast types every attribute Optional, and the tracer checks
    shapes itself (anything unexpected raises Untraceable)."""
    return isinstance(node, cls)


def _user_object(names: Any) -> bool:
    """Whether a (function, operator, type) name is schema-qualified outside pg_catalog."""
    parts = [n for n in names or () if _is(n, ast.String)]
    return len(parts) >= 2 and str(parts[0].sval) != "pg_catalog"


def _name(node: Any) -> str:
    if isinstance(node, ast.String):
        return str(node.sval)
    raise Untraceable(f"unexpected name node {type(node).__name__}")


class _Tracer:
    def __init__(self, used: Mapping[RelKey, set[str]], *, casts_run_code: bool = False) -> None:
        self.used = used
        self.casts_run_code = casts_run_code

    # --- queries -------------------------------------------------------------------------------

    def select(self, stmt: Any, parent: _Scope | None) -> list[tuple[str, _Derived]]:
        """The output columns of a query, in order, with what each computes from."""
        scope = _Scope(items=[], parent=parent)
        if stmt.withClause is not None:
            for cte in stmt.withClause.ctes or ():
                scope.ctes[cte.ctename] = self._cte(cte, scope, bool(stmt.withClause.recursive))
        if stmt.op is not None and int(stmt.op) != 0:  # UNION / INTERSECT / EXCEPT
            left = self.select(stmt.larg, scope)
            right = self.select(stmt.rarg, scope)
            if len(left) != len(right):
                raise Untraceable("set operation branches of different widths")
            out = []
            for (name, a), (_, b) in zip(left, right, strict=True):
                merged = _Derived(set(a.refs), a.opaque)
                merged.add(b)
                out.append((name, merged))
            return out
        if stmt.valuesLists:
            rows = [[self.expr(v, scope) for v in row] for row in stmt.valuesLists]
            width = len(rows[0])
            out = []
            for i in range(width):
                merged = _Derived()
                for row in rows:
                    merged.add(row[i])
                out.append((f"column{i + 1}", merged))
            return out
        for item in stmt.fromClause or ():
            scope.items.extend(self.from_item(item, scope))
        out = []
        for target in stmt.targetList or ():
            if not _is(target, ast.ResTarget):
                raise Untraceable(f"unexpected target {type(target).__name__}")
            value = target.val
            if _is(value, ast.ColumnRef) and isinstance(value.fields[-1], ast.A_Star):
                out.extend(self._star(value, scope))
                continue
            out.append((target.name or self._default_name(value), self.expr(value, scope)))
        return out

    def _cte(self, cte: Any, scope: _Scope, recursive: bool) -> list[tuple[str, _Derived]]:
        query = cte.ctequery
        if not _is(query, ast.SelectStmt):
            raise Untraceable("a data-modifying CTE")
        names = [_name(n) for n in cte.aliascolnames or ()]
        if recursive and query.op is not None and int(query.op) != 0:
            # The non-recursive term first, then the whole with the CTE's own columns as found so far,
            # until a round finds nothing new. What each column reads only ever grows, within the
            # finite set of columns read, so this reaches its fixpoint; the bound is a safeguard, and
            # reaching it is a failure, never a result.
            columns = self._named(self.select(query.larg, scope), names)
            for _ in range(MAX_RECURSION_ROUNDS):
                scope.ctes[cte.ctename] = columns
                grown = self._named(self.select(query, scope), names)
                if len(grown) != len(columns):
                    raise Untraceable("a recursive CTE whose terms differ in width")
                if all(
                    a.refs == b.refs and a.opaque == b.opaque for (_, a), (_, b) in zip(grown, columns, strict=True)
                ):
                    return grown
                columns = grown
            raise Untraceable("a recursive CTE that does not settle")
        return self._named(self.select(query, scope), names)

    @staticmethod
    def _named(outputs: list[tuple[str, _Derived]], names: list[str]) -> list[tuple[str, _Derived]]:
        """Output columns renamed by position by an alias list (`AS c(a, b)`)."""
        if names:
            if len(names) > len(outputs):
                raise Untraceable("more column aliases than columns")
            outputs = [(names[i] if i < len(names) else n, d) for i, (n, d) in enumerate(outputs)]
        return list(outputs)

    def _star(self, ref: Any, scope: _Scope) -> list[tuple[str, _Derived]]:
        # pg_get_viewdef expands `*` in a view's own target list; a `*` can only remain in an
        # EXISTS (SELECT * ...) or similar, where its columns do not become output of the view.
        fields = list(ref.fields)
        if len(fields) == 1:
            return [("*", each.whole_row()) for each in scope.items]
        named = self._item(_name(fields[-2]), scope)
        if named is None:
            raise Untraceable("a star reference to an unknown relation")
        return [("*", named.whole_row())]

    # --- FROM -------------------------------------------------------------------------------------

    def from_item(self, node: Any, scope: _Scope) -> list[_Item]:
        if _is(node, ast.RangeVar):
            alias = node.alias.aliasname if node.alias is not None else node.relname
            colnames = [_name(n) for n in (node.alias.colnames or ())] if node.alias is not None else []
            if node.schemaname is None:
                cte = scope.cte(node.relname)
                if cte is not None:
                    return [_Item(alias=alias, columns=self._named(cte, colnames))]
                key = self._unqualified(node.relname)
            else:
                key = (node.schemaname, node.relname)
            if colnames:
                raise Untraceable("column aliases on a relation")
            return [_Item(alias=alias, relation=key)]
        if _is(node, ast.JoinExpr):
            items = self.from_item(node.larg, scope) + self.from_item(node.rarg, scope)
            if node.alias is not None:
                # `(a JOIN b) AS j`: the join's columns are reachable as j.col only.
                joined: list[tuple[str, _Derived]] = []
                for item in items:
                    if item.relation is not None:
                        joined += [
                            (name, _Derived({ColRef(*item.relation, name)}))
                            for name in sorted(self.used.get(item.relation, set()))
                        ]
                        joined.append(("", item.whole_row()))  # `j.*` reads the relation whole
                    else:
                        joined += list(item.columns or ())
                return [_Item(alias=node.alias.aliasname, columns=joined)]
            return items
        if _is(node, ast.RangeSubselect):
            if node.alias is None:
                raise Untraceable("a subquery without an alias")
            # LATERAL may read the FROM items before it: they are already in `scope.items`.
            outputs = self.select(node.subquery, scope)
            names = [_name(n) for n in node.alias.colnames or ()]
            return [_Item(alias=node.alias.aliasname, columns=self._named(outputs, names))]
        if _is(node, ast.RangeFunction):
            # unnest(t.tags), generate_series(...), jsonb_each(t.doc): every output column computes
            # from every argument. A user-defined function in FROM cannot be seen into.
            derived = _Derived()
            for function in node.functions or ():
                call = function[0] if isinstance(function, (list, tuple)) else function
                derived.add(self.expr(call, scope))
            alias = node.alias.aliasname if node.alias is not None else "?function?"
            names = [_name(n) for n in (node.alias.colnames or ())] if node.alias is not None else []
            if not names:
                names = [alias]
            outputs_of = [(n, _Derived(set(derived.refs), derived.opaque)) for n in names]
            if node.ordinality:
                outputs_of.append(("ordinality", _Derived()))
            return [_Item(alias=alias, columns=outputs_of)]
        raise Untraceable(f"{type(node).__name__} in FROM")

    def _unqualified(self, name: str) -> RelKey:
        matches = [key for key in self.used if key[1] == name]
        if len(matches) != 1:
            raise Untraceable(f"cannot tell which relation {name!r} is")
        return matches[0]

    def _item(self, alias: str, scope: _Scope | None) -> _Item | None:
        while scope is not None:
            for item in scope.items:
                if item.alias == alias:
                    return item
            scope = scope.parent
        return None

    # --- expressions ----------------------------------------------------------------------------

    def column_ref(self, ref: Any, scope: _Scope) -> _Derived:
        fields = list(ref.fields)
        if isinstance(fields[-1], ast.A_Star):
            if len(fields) == 1:
                out = _Derived()
                for each in scope.items:
                    out.add(each.whole_row())
                return out
            named = self._item(_name(fields[-2]), scope)
            if named is None:
                raise Untraceable("a star reference to an unknown relation")
            return named.whole_row()
        names = [_name(f) for f in fields]
        if len(names) == 1:
            (name,) = names
            level: _Scope | None = scope
            while level is not None:
                found = [d for each in level.items if (d := each.column(name, self.used)) is not None]
                if found:
                    out = _Derived()
                    for d in found:  # ambiguity cannot happen in valid SQL; union if it seems to
                        out.add(d)
                    return out
                whole = [each for each in level.items if each.alias == name]
                if whole:  # `row_to_json(t)`: a whole-row reference by alias
                    return whole[0].whole_row()
                level = level.parent
            raise Untraceable(f"cannot tell which relation column {name!r} belongs to")
        if len(names) == 2:
            owner = self._item(names[0], scope)
            if owner is None:
                raise Untraceable(f"unknown relation {names[0]!r}")
            found_column = owner.column(names[1], self.used)
            if found_column is None:
                raise Untraceable(f"unknown column {names[0]}.{names[1]}")
            return found_column
        if len(names) == 3:
            key = (names[0], names[1])
            if names[2] not in self.used.get(key, set()):
                raise Untraceable(f"unknown column {'.'.join(names)}")
            return _Derived({ColRef(*key, names[2])})
        raise Untraceable("a column reference with a database name")

    def expr(self, node: Any, scope: _Scope) -> _Derived:
        """Everything an expression reads: its column references, through any nesting."""
        out = _Derived()
        if node is None:
            return out
        if isinstance(node, (list, tuple)):
            for child in node:
                out.add(self.expr(child, scope))
            return out
        if _is(node, ast.ColumnRef):
            return self.column_ref(node, scope)
        if _is(node, ast.SubLink):
            # A scalar subquery, EXISTS, IN, ANY: its value depends on everything it reads.
            out.add(self.expr(node.testexpr, scope))
            out.add(self._everything_in(node.subselect, scope))
            return out
        # Under an empty search_path only system objects print unqualified: a qualified function,
        # operator or type is the user's, and may run code (a function, an operator's function, a
        # cast function) whose body the tracer cannot follow.
        if _is(node, ast.FuncCall):
            if _user_object(node.funcname):
                out.opaque = f"calls {'.'.join(_name(n) for n in node.funcname)}(), whose body the portal cannot trace"
        elif _is(node, ast.A_Expr):
            if _user_object(node.name):
                out.opaque = "uses an operator defined in the database, whose function the portal cannot trace"
        elif _is(node, ast.TypeCast):
            names = node.typeName.names if node.typeName is not None else ()
            if _user_object(names):
                out.opaque = "casts to a type defined in the database, whose cast function the portal cannot trace"
            elif self.casts_run_code:
                out.opaque = "casts a value while the view runs functions defined in the database"
        if _is(node, ast.Node):
            for attr in node:
                value = getattr(node, attr)
                if isinstance(value, (ast.Node, list, tuple)):
                    out.add(self.expr(value, scope))
        return out

    def _everything_in(self, stmt: Any, scope: _Scope) -> _Derived:
        """All a subquery reads in any clause (a conservative answer for its value)."""
        if not _is(stmt, ast.SelectStmt):
            raise Untraceable(f"{type(stmt).__name__} as a subquery")
        inner = _Scope(items=[], parent=scope)
        out = _Derived()
        if stmt.withClause is not None:
            for cte in stmt.withClause.ctes or ():
                inner.ctes[cte.ctename] = self._cte(cte, inner, bool(stmt.withClause.recursive))
        if stmt.op is not None and int(stmt.op) != 0:
            out.add(self._everything_in(stmt.larg, inner))
            out.add(self._everything_in(stmt.rarg, inner))
            return out
        for item in stmt.fromClause or ():
            inner.items.extend(self.from_item(item, inner))
        for item in inner.items:
            if item.relation is None:
                out.add(item.whole_row())
        for clause in (stmt.targetList, stmt.whereClause, stmt.havingClause, stmt.groupClause, stmt.valuesLists):
            out.add(self.expr(clause, inner))
        for item in stmt.fromClause or ():
            if _is(item, ast.JoinExpr):
                out.add(self._join_quals(item, inner))
        return out

    def _join_quals(self, join: Any, scope: _Scope) -> _Derived:
        out = self.expr(join.quals, scope)
        for side in (join.larg, join.rarg):
            if _is(side, ast.JoinExpr):
                out.add(self._join_quals(side, scope))
        return out

    @staticmethod
    def _default_name(value: Any) -> str:
        if _is(value, ast.ColumnRef) and isinstance(value.fields[-1], ast.String):
            return str(value.fields[-1].sval)
        if _is(value, ast.FuncCall):
            return str(value.funcname[-1].sval)
        return "?column?"
