"""Row filters: an owner's small predicate, parsed with pglast, compiled to a row-level security policy.

The owner writes e.g. ``region IN ('EU','UK') AND active`` or ``tenant_id = grantee.tenant``. It is
parsed by PostgreSQL's own parser (pglast) and only this grammar is accepted:

* a comparison ``column op operand`` (op: ``= <> < <= > >=``), ``column [NOT] IN (operands)``,
  ``column [NOT] BETWEEN operand AND operand``, ``column IS [NOT] NULL``, or a bare boolean column;
* an operand is a constant (string, number, true/false) or ``grantee.<attribute>``;
* combined with ``AND``, ``OR``, ``NOT`` and parentheses.

The result is an expression tree of plain tuples (hashable, JSON-friendly) that is rendered again
with ``psycopg2.sql`` (``Identifier`` for columns, ``Literal`` for constants): the owner's text never
reaches a target. Grantee attributes are replaced by their values (:func:`bind`) before rendering.

On the target each filtered access package gets ``CREATE POLICY <package> ON table AS PERMISSIVE FOR
SELECT TO <package> USING (<predicate>)``; see :func:`policy_statements`. Knows no Django.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pglast
from pglast import ast
from pglast.enums import A_Expr_Kind, BoolExprType, NullTestType
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from governance.provisioners.postgres import Desired, ObjectRef, RowSecurity, Statement, display_name, render
from governance.provisioners.postgres.applying import _read

Expr = tuple[Any, ...]
OPERATORS = ("=", "<>", "<", "<=", ">", ">=")
_MAX_TEXT = 2000


class FilterError(ValueError):
    """The filter is outside the grammar; ``part`` is the offending piece, as the owner wrote it."""

    def __init__(self, message: str, part: str = "") -> None:
        super().__init__(message)
        self.part = part


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def parse(text: str, columns: Collection[str]) -> Expr:
    """The expression tree of ``text``, whose columns must be among ``columns``; FilterError otherwise."""
    text = (text or "").strip()
    if not text:
        raise FilterError("The filter is empty.")
    if len(text) > _MAX_TEXT:
        raise FilterError(f"The filter is longer than {_MAX_TEXT} characters.")
    try:
        statements = pglast.parse_sql("SELECT " + text)
    except pglast.parser.ParseError as exc:
        raise FilterError(f"The filter is not a valid expression: {exc}.", text) from None
    stmt = statements[0].stmt if len(statements) == 1 else None
    if (
        not isinstance(stmt, ast.SelectStmt)
        or stmt.fromClause
        or stmt.whereClause
        or stmt.groupClause
        or stmt.sortClause
        or stmt.limitCount
        or stmt.distinctClause is not None
        or len(stmt.targetList or ()) != 1
        or _any(stmt).targetList[0].name
    ):
        raise FilterError("The filter must be one expression (no ';', no clauses).", text)
    return _Walker(text, frozenset(columns), strict=True).node(_any(stmt).targetList[0].val)


def _any(node: object) -> Any:
    """pglast's nodes are typed with optional fields; the walker checks each shape itself."""
    return node


def _is(node: Any, *kinds: type) -> bool:
    """isinstance without narrowing: pglast types its fields as optional; the walker checks shapes."""
    return isinstance(node, kinds)


class _Walker:
    def __init__(self, text: str, columns: frozenset[str] | None, *, strict: bool) -> None:
        self.text, self.columns, self.strict = text, columns, strict

    def part(self, node: Any) -> str:
        loc = getattr(node, "location", None)
        if isinstance(loc, int) and loc >= 7:
            return self.text[loc - 7 : loc - 7 + 40].split("\n")[0]
        return type(node).__name__

    def refuse(self, node: Any, what: str) -> FilterError:
        return FilterError(f"{what} is not allowed in a row filter: {self.part(node)!r}.", self.part(node))

    def node(self, node: Any) -> Expr:
        node = _any(node)
        if _is(node, ast.BoolExpr):
            args = [self.node(a) for a in node.args]
            if node.boolop == BoolExprType.NOT_EXPR:
                return ("not", args[0])
            op = "and" if node.boolop == BoolExprType.AND_EXPR else "or"
            flat: list[Expr] = []
            for a in args:
                flat.extend(a[1:] if a[0] == op else [a])
            return (op, *flat)
        if _is(node, ast.NullTest):
            return ("null", self.column(node.arg), node.nulltesttype == NullTestType.IS_NOT_NULL)
        if _is(node, ast.A_Expr):
            return self.a_expr(node)
        if _is(node, ast.ColumnRef, ast.TypeCast) and not self._is_const(node):
            return ("col", self.column(node))
        if _is(node, ast.FuncCall):
            raise self.refuse(node, "A function call")
        if _is(node, ast.SubLink):
            raise self.refuse(node, "A subquery")
        raise self.refuse(node, "This expression")

    def a_expr(self, node: Any) -> Expr:
        node = _any(node)
        op = node.name[-1].sval if node.name else ""
        kind = node.kind
        if kind == A_Expr_Kind.AEXPR_OP and op in OPERATORS and len(node.name) == 1:
            return ("cmp", op, self.column(node.lexpr), self.operand(node.rexpr))
        if kind == A_Expr_Kind.AEXPR_IN and op in ("=", "<>"):
            expr: Expr = ("in", self.column(node.lexpr), tuple(self.operand(v) for v in node.rexpr))
            return expr if op == "=" else ("not", expr)
        if kind in (A_Expr_Kind.AEXPR_BETWEEN, A_Expr_Kind.AEXPR_NOT_BETWEEN):
            lo, hi = (self.operand(v) for v in node.rexpr)
            between: Expr = ("between", self.column(node.lexpr), lo, hi)
            return between if kind == A_Expr_Kind.AEXPR_BETWEEN else ("not", between)
        if not self.strict and kind in (A_Expr_Kind.AEXPR_OP_ANY, A_Expr_Kind.AEXPR_OP_ALL) and op in ("=", "<>"):
            array = node.rexpr.arg if _is(node.rexpr, ast.TypeCast) else node.rexpr
            if _is(array, ast.A_ArrayExpr):
                found: Expr = ("in", self.column(node.lexpr), tuple(self.operand(v) for v in array.elements))
                if (op, kind) == ("=", A_Expr_Kind.AEXPR_OP_ANY):
                    return found
                if (op, kind) == ("<>", A_Expr_Kind.AEXPR_OP_ALL):
                    return ("not", found)
        raise self.refuse(node, f"The operator {op!r}" if op else "This expression")

    def column(self, node: Any) -> str:
        node = _any(node)
        if _is(node, ast.FuncCall):
            raise self.refuse(node, "A function call")
        if _is(node, ast.SubLink):
            raise self.refuse(node, "A subquery")
        if not self.strict and _is(node, ast.TypeCast):
            node = node.arg  # PostgreSQL shows a varchar column compared as text as (col)::text
        if not _is(node, ast.ColumnRef) or len(node.fields) != 1 or not isinstance(node.fields[0], ast.String):
            raise self.refuse(node, "Only a column of this dataset may stand here; this")
        name = str(node.fields[0].sval)
        if self.columns is not None and name not in self.columns:
            raise FilterError(f"Unknown column {display_name(name)!s} (not a column of this dataset).", name)
        return str(name)

    def _is_const(self, node: Any) -> bool:
        return _is(node, ast.A_Const) or (_is(node, ast.TypeCast) and _is(node.arg, ast.A_Const))

    def operand(self, node: Any) -> Expr:
        node = _any(node)
        if _is(node, ast.FuncCall):
            raise self.refuse(node, "A function call")
        if _is(node, ast.SubLink):
            raise self.refuse(node, "A subquery")
        if _is(node, ast.ColumnRef):
            names = [f.sval for f in node.fields if _is(f, ast.String)]
            if len(node.fields) == 2 and len(names) == 2 and names[0] == "grantee":
                return ("attr", names[1])
            raise self.refuse(node, "A column on the right-hand side (use a constant or grantee.<attribute>)")
        if _is(node, ast.TypeCast) and _is(node.arg, ast.A_Const):
            if self.strict:
                raise self.refuse(node, "A cast")
            node = node.arg
        if _is(node, ast.A_Const):
            if node.isnull:
                raise self.refuse(node, "NULL as a value (use IS NULL)")
            val = node.val
            if _is(val, ast.String):
                return ("const", val.sval)
            if _is(val, ast.Integer):
                return ("const", int(val.ival))
            if _is(val, ast.Float):
                return ("const", str(val.fval))
            if _is(val, ast.Boolean):
                return ("const", bool(val.boolval))
        raise self.refuse(node, "Only a constant or grantee.<attribute> may stand here; this")


def attributes(expr: Expr) -> list[str]:
    """The grantee attributes ``expr`` uses, sorted."""
    out: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, tuple):
            if node and node[0] == "attr":
                out.add(node[1])
            for child in node[1:]:
                walk(child)

    walk(expr)
    return sorted(out)


def bind(expr: Expr, values: Mapping[str, str]) -> Expr:
    """``expr`` with each ``grantee.<attr>`` replaced by its value; FilterError naming the missing ones."""
    missing = [a for a in attributes(expr) if a not in values]
    if missing:
        raise FilterError(f"The grantee has no value for attribute(s) {', '.join(missing)}.", ", ".join(missing))

    def walk(node: Any) -> Any:
        if isinstance(node, tuple):
            if node and node[0] == "attr":
                return ("const", str(values[node[1]]))
            return tuple(walk(child) for child in node)
        return node

    out: Expr = walk(expr)
    return out


def from_json(value: Any) -> Expr:
    """An expression tree stored as JSON (lists) back as tuples."""

    def walk(node: Any) -> Any:
        return tuple(walk(n) for n in node) if isinstance(node, list) else node

    out = walk(value)
    assert isinstance(out, tuple)
    return out


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def to_sql(expr: Expr) -> sql.Composable:
    """The predicate as SQL: columns as Identifier, constants as Literal, operators from a fixed list."""
    tag = expr[0]
    if tag in ("and", "or"):
        return sql.SQL("({})").format(sql.SQL(f" {tag.upper()} ").join(to_sql(e) for e in expr[1:]))
    if tag == "not":
        return sql.SQL("(NOT {})").format(to_sql(expr[1]))
    if tag == "col":
        return sql.Identifier(expr[1])
    if tag == "null":
        return sql.SQL("({} IS NOT NULL)" if expr[2] else "({} IS NULL)").format(sql.Identifier(expr[1]))
    if tag == "cmp":
        if expr[1] not in OPERATORS:
            raise FilterError(f"Unknown operator {expr[1]!r}.")
        return sql.SQL("({} " + expr[1] + " {})").format(sql.Identifier(expr[2]), _value(expr[3]))
    if tag == "in":
        return sql.SQL("({} IN ({}))").format(sql.Identifier(expr[1]), sql.SQL(", ").join(_value(v) for v in expr[2]))
    if tag == "between":
        return sql.SQL("({} BETWEEN {} AND {})").format(sql.Identifier(expr[1]), _value(expr[2]), _value(expr[3]))
    raise FilterError(f"Unknown node {tag!r}.")


def _value(operand: Expr) -> sql.Composable:
    if operand[0] != "const":
        raise FilterError(f"grantee.{operand[1]} has no value yet.", str(operand[1]))
    return sql.Literal(operand[1])


def text_of(expr: Expr) -> str:
    """The predicate as it is created on the target (and shown to approvers)."""
    return render(to_sql(expr))


def canonical(text: str) -> Expr:
    """A comparable form of a predicate as PostgreSQL shows it (``pg_policies.qual``) or as the portal
    renders it: casts dropped, ``= ANY (ARRAY[…])`` as IN, BETWEEN as two comparisons, constants as
    text."""
    stmt: Any = pglast.parse_sql("SELECT " + text)[0].stmt
    tree = _Walker("SELECT " + text, None, strict=False).node(stmt.targetList[0].val)

    def norm(node: Any) -> Any:
        if not isinstance(node, tuple):
            return node
        if node[0] == "const":
            return (
                "const",
                {True: "true", False: "false"}.get(node[1], str(node[1]))
                if isinstance(node[1], bool)
                else str(node[1]),
            )
        if node[0] == "between":
            return ("and", ("cmp", ">=", node[1], norm(node[2])), ("cmp", "<=", node[1], norm(node[3])))
        if node[0] == "in" and len(node[2]) == 1:
            return ("cmp", "=", node[1], norm(node[2][0]))
        out = tuple(norm(n) for n in node)
        if out[0] in ("and", "or"):
            flat: list[Any] = []
            for a in out[1:]:
                flat.extend(a[1:] if a[0] == out[0] else [a])
            return (out[0], *flat)
        return out

    out: Expr = norm(tree)
    return out


# ---------------------------------------------------------------------------------------------
# Planning and verifying
# ---------------------------------------------------------------------------------------------


def _table(obj: ObjectRef) -> sql.Composable:
    return sql.Identifier(obj.schema, obj.name)


def _policy_exists(name: str, obj: ObjectRef) -> sql.Composable:
    return sql.SQL(
        "EXISTS (SELECT 1 FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid"
        " JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace"
        " WHERE s.nspname = {} AND c.relname = {} AND p.polname = {})"
    ).format(sql.Literal(obj.schema), sql.Literal(obj.name), sql.Literal(name))


def _rls_flag(obj: ObjectRef, column: str) -> sql.Composable:
    return sql.SQL(
        "coalesce((SELECT c.{} FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace"
        " WHERE s.nspname = {} AND c.relname = {}), false)"
    ).format(sql.Identifier(column), sql.Literal(obj.schema), sql.Literal(obj.name))


def create_policy(name: str, obj: ObjectRef, predicate: sql.Composable) -> sql.Composable:
    return sql.SQL("CREATE POLICY {} ON {} AS PERMISSIVE FOR SELECT TO {} USING ({})").format(
        sql.Identifier(name), _table(obj), sql.Identifier(name), predicate
    )


# The readers of a table who are not the portal's: every role holding a privilege on it (or on one
# of its columns), PUBLIC included, that is not its owner, the portal's login, a portal package
# (a role named with the package prefix: those get a pass-through policy) or a confirmed reader.
# Every role holding a privilege on the table or on one of its columns (a.grantee; 0 is PUBLIC).
_HOLDERS = (
    "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace s ON s.oid = c.relnamespace,"
    " LATERAL (SELECT x.grantee FROM pg_catalog.aclexplode(c.relacl) x UNION"
    " SELECT x.grantee FROM pg_catalog.pg_attribute t, pg_catalog.aclexplode(t.attacl) x"
    " WHERE t.attrelid = c.oid AND t.attnum > 0 AND NOT t.attisdropped) a"
)
_READERS = (
    "SELECT string_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(r.rolname) END, ', ')"
    " INTO who {holders} LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee"
    " WHERE s.nspname = {schema} AND c.relname = {name} AND a.grantee <> c.relowner"
    " AND (r.rolname IS NULL OR (r.rolname <> current_user AND NOT r.rolname LIKE {packages}"
    " AND NOT r.rolname = ANY ({confirmed})))"
)
_PACKAGES_WITHOUT_POLICY = (
    "SELECT DISTINCT r.rolname {holders} JOIN pg_catalog.pg_roles r ON r.oid = a.grantee"
    " WHERE s.nspname = {schema} AND c.relname = {name} AND r.rolname LIKE {packages}"
    " AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = c.oid AND p.polname = r.rolname)"
)
_ENABLE = (
    "DECLARE who text; pkg name; BEGIN {readers};"
    " IF who IS NOT NULL THEN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE ="
    " 'row level security not enabled on ' || {shown} || ': these readers the portal does not manage would"
    " see no row any more: ' || who || '. The dataset owner must confirm them first (row filters,"
    " confirm readers).'; END IF;"
    " FOR pkg IN {packages_query} LOOP"
    " EXECUTE pg_catalog.format('CREATE POLICY %I ON %I.%I AS PERMISSIVE FOR SELECT TO %I USING (true)',"
    " pkg, {schema}, {name}, pkg); END LOOP;"
    " EXECUTE pg_catalog.format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', {schema}, {name}); END"
)


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def enable_statement(obj: ObjectRef, security: RowSecurity) -> Statement:
    """``ENABLE ROW LEVEL SECURITY`` on ``obj``, in one PL/pgSQL block, only when it is not enabled:
    refused (SQLSTATE 42501, naming them) while readers the portal does not manage and the owner has
    not confirmed would lose every row; every portal package on the table without a policy gets a
    pass-through one (``USING (true)``) first, in the same transaction, so its members keep every row."""
    args: dict[str, sql.Composable] = {
        "schema": sql.Literal(obj.schema),
        "name": sql.Literal(obj.name),
        "packages": sql.Literal(_like_prefix(security.packages)),
        "confirmed": sql.SQL("ARRAY[{}]::text[]").format(sql.SQL(", ").join(map(sql.Literal, security.confirmed))),
    }
    args["holders"] = sql.SQL(_HOLDERS)
    body = sql.SQL(_ENABLE).format(
        readers=sql.SQL(_READERS).format(**args),
        packages_query=sql.SQL(_PACKAGES_WITHOUT_POLICY).format(**args),
        shown=sql.Literal(str(obj)),
        schema=args["schema"],
        name=args["name"],
    )
    return Statement.of(
        sql.SQL("DO {}").format(sql.Literal(render(body))),
        guard=sql.SQL("SELECT NOT {}").format(_rls_flag(obj, "relrowsecurity")),
        condition=f"row level security is not enabled on {obj} (refused while readers the portal does not"
        " manage would lose rows; portal packages without a policy get one USING (true))",
    )


def force_statement(obj: ObjectRef) -> Statement:
    return Statement.of(
        sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(_table(obj)),
        guard=sql.SQL("SELECT NOT {}").format(_rls_flag(obj, "relforcerowsecurity")),
        condition=f"row level security is not forced on {obj}",
    )


def policy_statements(name: str, obj: ObjectRef, row_filter: Expr | None, security: RowSecurity) -> list[Statement]:
    """What a package on a dataset under row filters needs besides its privileges.

    Filtered: its policy (created when missing), then RLS enabled (:func:`enable_statement`) and
    forced when asked. Unfiltered: a pass-through policy once RLS is enabled on the table, so its
    members keep every row."""
    if row_filter is None:
        return [
            Statement.of(
                create_policy(name, obj, sql.SQL("true")),
                guard=sql.SQL("SELECT {} AND NOT {}").format(
                    _rls_flag(obj, "relrowsecurity"), _policy_exists(name, obj)
                ),
                condition=f"row level security is enabled on {obj} and {display_name(name)} has no policy there",
            )
        ]
    out = [
        Statement.of(
            create_policy(name, obj, to_sql(row_filter)),
            guard=sql.SQL("SELECT NOT {}").format(_policy_exists(name, obj)),
            condition=f"the policy {display_name(name)} does not exist on {obj}",
        ),
        enable_statement(obj, security),
    ]
    if security.force:
        out.append(force_statement(obj))
    return out


def drop_policy_statement(name: str, obj: ObjectRef) -> Statement:
    """A leaving package's policy goes with it, once it has no member (PostgreSQL refuses to drop a
    role a policy names). Row level security stays enabled on the table (see docs/privacy.md)."""
    return Statement.of(
        sql.SQL("DROP POLICY {} ON {}").format(sql.Identifier(name), _table(obj)),
        guard=sql.SQL(
            "SELECT {} AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m"
            " WHERE m.roleid = pg_catalog.to_regrole(pg_catalog.quote_ident({}))::oid)"
        ).format(_policy_exists(name, obj), sql.Literal(name)),
        condition=f"the package {display_name(name)} has a policy on {obj} and no member left",
        tolerate=("42704",),
    )


def replace_policy_query(name: str, obj: ObjectRef, row_filter: Expr | None) -> sql.Composable:
    """The repair of a hand-edited policy: dropped and created again with its definition."""
    predicate = sql.SQL("true") if row_filter is None else to_sql(row_filter)
    return sql.SQL("DROP POLICY IF EXISTS {} ON {}; {}").format(
        sql.Identifier(name), _table(obj), create_policy(name, obj, predicate)
    )


@dataclass(frozen=True)
class Expected:
    """A policy the portal manages: on ``obj``, named and granted to package ``name``."""

    name: str
    obj: ObjectRef
    row_filter: Expr | None
    force: bool = False


_OBSERVE = (
    "SELECT u.i, c.relrowsecurity, c.relforcerowsecurity, p.polpermissive, p.polcmd,"
    " ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_roles r WHERE r.oid = ANY (p.polroles)),"
    " pg_catalog.pg_get_expr(p.polqual, p.polrelid)"
    " FROM unnest(%(schemas)s::text[], %(names)s::text[], %(pols)s::text[]) WITH ORDINALITY AS u(sch, rel, pol, i)"
    " LEFT JOIN pg_catalog.pg_namespace s ON s.nspname = u.sch"
    " LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = s.oid AND c.relname = u.rel"
    " LEFT JOIN pg_catalog.pg_policy p ON p.polrelid = c.oid AND p.polname = u.pol ORDER BY u.i"
)


def verify(conn: PgConnection, expected: Sequence[Expected]) -> list[list[str]]:
    """Per expected policy, its differences on the target (empty: as the portal made it): it exists,
    is PERMISSIVE FOR SELECT TO its package only, its USING expression equals the definition (both
    normalised by :func:`canonical`) and RLS is enabled (and forced when asked). A pass-through
    policy (no filter) is only expected once RLS is enabled."""
    if not expected:
        return []
    params = {
        "schemas": [e.obj.schema for e in expected],
        "names": [e.obj.name for e in expected],
        "pols": [e.name for e in expected],
    }
    with _read(conn, "verify row policies") as cur:
        cur.execute(_OBSERVE, params)
        rows = cur.fetchall()
    out: list[list[str]] = []
    for e, (_, rls, forced, permissive, cmd, roles, qual) in zip(expected, rows, strict=True):
        problems: list[str] = []
        who = f"policy {display_name(e.name)} on {e.obj}"
        if e.row_filter is not None and not rls:
            problems.append(f"row level security is not enabled on {e.obj}")
        if e.force and not forced:
            problems.append(f"row level security is not forced on {e.obj}")
        if qual is None and cmd is None:
            if e.row_filter is not None or rls:
                problems.append(f"{who} does not exist")
        else:
            want = "true" if e.row_filter is None else text_of(e.row_filter)
            if not permissive or cmd != "r" or list(roles or []) != [e.name]:
                problems.append(f"{who} is not PERMISSIVE FOR SELECT TO {display_name(e.name)} only")
            if qual is None or not _same(qual, want):
                problems.append(f"{who} has USING ({qual}) instead of ({want})")
        out.append(problems)
    return out


def _same(qual: str, want: str) -> bool:
    if want == "true" or qual.strip() == "true":
        return qual.strip() == want
    try:
        return canonical(qual) == canonical(want)
    except (FilterError, pglast.parser.ParseError):
        return False  # hand-edited into something outside the grammar


def expected_policies(desireds: Sequence[Desired]) -> list[tuple[int, Expected]]:
    """The policies the packages of ``desireds`` call for (those of objects under row filters), each
    with the index of its desired state."""
    return [
        (i, Expected(pkg.name, pkg.obj, pkg.row_filter, bool(pkg.rls.force) and pkg.row_filter is not None))
        for i, desired in enumerate(desireds)
        for pkg in desired.packages
        if pkg.rls is not None
    ]


def verify_with_policies(
    conn: PgConnection,
    desireds: Sequence[Desired],
    policies: Sequence[tuple[int, Expected]],
    verify_many: Callable[[PgConnection, Sequence[Desired]], list[list[str]]],
) -> list[list[str]]:
    """``verify_many`` (privileges and memberships) plus :func:`verify` of ``policies``, per desired."""
    out = verify_many(conn, desireds)
    for (i, _), problems in zip(policies, verify(conn, [e for _, e in policies]), strict=True):
        out[i] += problems
    return out
