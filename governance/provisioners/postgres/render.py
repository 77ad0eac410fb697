"""Rendering statements without a database (display and digest), and the Statement and Plan types."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg2 import sql

from .values import (
    PLAN_FORMAT,
    REDACTED,
    _quote_ident,
    _quote_literal,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Rendering (display and digest only; execution always uses the Composable itself)
# ---------------------------------------------------------------------------------------------


def render(composable: sql.Composable, secret_values: Collection[str] = (), conn: Any = None) -> str:
    """Text of ``composable`` with every secret Literal shown as '[REDACTED]'.

    Without ``conn`` this needs no database (plans are rendered and hashed at approval time); with
    ``conn`` names and values are quoted by psycopg2/libpq itself.
    """
    if isinstance(composable, sql.Composed):
        return "".join(render(part, secret_values, conn) for part in composable.seq)
    if isinstance(composable, sql.SQL):
        return composable.string
    if isinstance(composable, sql.Identifier):
        if conn is not None:
            return composable.as_string(conn)
        return ".".join(_quote_ident(s) for s in composable.strings)
    if isinstance(composable, sql.Literal):
        value = composable.wrapped
        if isinstance(value, str) and value in secret_values:
            return _quote_literal(REDACTED)
        if conn is not None:
            return composable.as_string(conn)
        if isinstance(value, bool) or value is None:
            return {True: "true", False: "false", None: "NULL"}[value]
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str):
            return _quote_literal(value)
        raise TypeError(f"cannot render a {type(value).__name__} literal without a connection")
    if isinstance(composable, _SingleGuard):
        return render(composable.composed(), secret_values, conn)
    raise TypeError(f"cannot render {type(composable).__name__}")


ROLE_OID = "pg_catalog.to_regrole(pg_catalog.quote_ident({}))::oid"


@dataclass(frozen=True)
class GuardKind:
    """A kind of guard that :func:`apply` can ask for many statements in one query.

    ``expression`` is a boolean SQL expression over the text parameters ``params`` (``{name}``
    placeholders; literal braces doubled; ``{role_oid}`` is the oid of the role named by ``{role}``,
    NULL when there is no such role: compared with ACL entries instead of joining ``pg_roles``, a
    view whose planning cost more than the guard's execution). One guard binds them as literals (:meth:`single`); the
    guards of one kind that are asked together become one query over arrays (:meth:`many`), which
    PostgreSQL plans once instead of once per statement: planning, not execution, was what a batch's
    hundreds of catalog guards cost. Both forms are made from the same expression."""

    name: str
    expression: str
    params: tuple[str, ...]

    def single(self, args: Sequence[str]) -> sql.Composable:
        values = {p: sql.Literal(a) for p, a in zip(self.params, args, strict=True)}
        return sql.SQL("SELECT {}").format(self._bind(values))

    def many(self, rows: Sequence[Sequence[str]]) -> sql.Composable:
        """The answers for ``rows`` (each the parameters of one guard), in order, as one boolean[]."""
        refs: dict[str, sql.Composable] = {p: sql.SQL("gov_x.{}").format(sql.Identifier(p)) for p in self.params}
        arrays = [sql.SQL("{}::text[]").format(sql.Literal([row[n] for row in rows])) for n in range(len(self.params))]
        return sql.SQL(
            "SELECT pg_catalog.array_agg(({}) ORDER BY gov_x.gov_ord)"
            " FROM unnest({}) WITH ORDINALITY AS gov_x({}, gov_ord)"
        ).format(
            self._bind(refs),
            sql.SQL(", ").join(arrays),
            sql.SQL(", ").join(sql.Identifier(p) for p in self.params),
        )

    def _bind(self, values: dict[str, sql.Composable]) -> sql.Composable:
        if "role" in values:
            values = {**values, "role_oid": sql.SQL(ROLE_OID).format(values["role"])}
        return sql.SQL(self.expression).format(**values)


@dataclass(frozen=True)
class Guard:
    """A guard of a :class:`GuardKind` with its parameters (``Statement.of(guard=...)``)."""

    kind: GuardKind
    args: tuple[str, ...]

    @property
    def query(self) -> sql.Composable:
        return self.kind.single(self.args)


class _SingleGuard(sql.Composable):
    """A :class:`Guard` asked on its own, composed only when it is sent. Almost every guard of a
    batch is asked with the others of its kind (:meth:`GuardKind.many`), so building each one's
    single form up front (psycopg2 parses the expression's placeholders on every ``format``) cost a
    batch of 500 grants on 500 tables a fifth of its Python time."""

    def __init__(self, guard: Guard) -> None:
        super().__init__(guard)

    def composed(self) -> sql.Composable:
        query: sql.Composable = self._wrapped.query
        return query

    def as_string(self, context: Any) -> str:
        return self.composed().as_string(context)


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a plan.

    ``query`` is what runs. ``text`` is its rendering with secrets redacted. ``guard`` (optional) is
    a read-only query returning one boolean, run first: False skips the statement; ``condition``
    says in words what the guard checks and is part of the plan text and digest. ``locks`` are
    advisory lock names taken only when the statement really runs (and the guard is then checked
    again). ``tolerate`` lists SQLSTATEs meaning "already done": the statement then runs inside a
    SAVEPOINT and such an error is rolled back to it instead of failing the plan.

    ``reads`` names what the guard reads and ``writes`` what running the statement changes, as
    :func:`topic` strings; None (the default) means "anything". :func:`apply` keeps a guard's answer,
    asked ahead, for as long as no statement that ran since wrote what it reads, so a batch of
    thousands of statements asks each guard about once instead of again after every statement.
    Neither is part of the plan's text or digest. ``asked`` is the guard as a :class:`Guard` when
    it is of a kind that :func:`apply` asks for many statements in one query.
    """

    query: sql.Composable = field(repr=False)
    text: str
    guard: sql.Composable | None = field(default=None, repr=False)
    condition: str | None = None
    locks: tuple[str, ...] = ()
    tolerate: frozenset[str] = frozenset()
    secret_values: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    reads: frozenset[str] | None = field(default=None, repr=False, compare=False)
    writes: frozenset[str] | None = field(default=None, repr=False, compare=False)
    asked: Guard | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(
        cls,
        query: sql.Composable,
        *,
        guard: sql.Composable | Guard | None = None,
        condition: str | None = None,
        locks: tuple[str, ...] = (),
        tolerate: Collection[str] = (),
        secret_values: Collection[str] = (),
        reads: Collection[str] | None = None,
        writes: Collection[str] | None = None,
    ) -> Statement:
        hidden = frozenset(secret_values)
        asked = guard if isinstance(guard, Guard) else None
        return cls(
            query,
            render(query, hidden),
            _SingleGuard(asked) if asked is not None else guard,
            condition,
            locks,
            frozenset(tolerate),
            hidden,
            None if reads is None else frozenset(reads),
            None if writes is None else frozenset(writes),
            asked,
        )

    def voids(self, other: Statement) -> bool:
        """Whether running this statement may change the answer of ``other``'s guard."""
        if self.writes is None or other.reads is None:
            return True
        return not self.writes.isdisjoint(other.reads)

    @property
    def line(self) -> str:
        """The statement as shown in a plan: its text, and its condition when it has one."""
        return self.text if self.condition is None else f"{self.text}  -- only if {self.condition}"

    def as_string(self, conn: Any) -> str:
        """The text as psycopg2 renders it on ``conn`` (names and values quoted by libpq), redacted."""
        return render(self.query, self.secret_values, conn)


@dataclass(frozen=True)
class Plan:
    """An ordered list of statements and the sha256 digest of their rendered lines.

    ``lock_keys`` name the advisory locks :func:`apply` takes before the first statement.
    """

    statements: tuple[Statement, ...]
    digest: str
    lock_keys: tuple[str, ...] = ()

    @classmethod
    def build(cls, statements: Sequence[Statement], lock_keys: Sequence[str] = ()) -> Plan:
        lines = [st.line for st in statements]
        payload = json.dumps([PLAN_FORMAT, lines], ensure_ascii=False, separators=(",", ":"))
        digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()
        return cls(tuple(statements), digest, tuple(dict.fromkeys(lock_keys)))

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(st.line for st in self.statements)

    def render(self, conn: Any = None) -> list[str]:
        """The plan's lines; with ``conn`` quoted by libpq on it (identical to :attr:`lines`)."""
        if conn is None:
            return list(self.lines)
        return [
            st.as_string(conn) + ("" if st.condition is None else f"  -- only if {st.condition}")
            for st in self.statements
        ]

    @property
    def text(self) -> str:
        """The plan for people (approvers, job rows): one statement per line, secrets redacted."""
        return ";\n".join(self.lines) + (";" if self.statements else "")

    @property
    def secret_values(self) -> frozenset[str]:
        out: set[str] = set()
        for st in self.statements:
            out |= st.secret_values
        return frozenset(out)

    @classmethod
    def combine(cls, plans: Sequence[Plan]) -> Plan:
        """Several plans as one (one transaction, e.g. a batch of grants of one source). A guarded
        statement already present (the same CREATE ROLE or GRANT USAGE) is not repeated."""
        statements: list[Statement] = []
        seen: set[str] = set()
        for plan in plans:
            for st in plan.statements:
                if st.guard is not None and st.line in seen:
                    continue
                seen.add(st.line)
                statements.append(st)
        # The roles the plans create come first: a CREATE ROLE depends on nothing else in a plan,
        # and once they all ran the guards of what follows (which read those roles) are asked
        # together, not again after each creation. The database lock is the last lock any
        # transaction takes (see apply()): the statements that take it (GRANT CONNECT) move to the
        # end, in their order. Otherwise each keeps its order.
        statements.sort(key=lambda st: 0 if _creates_role(st) else 2 if any(map(_is_last_lock, st.locks)) else 1)
        return cls.build(statements, [key for plan in plans for key in plan.lock_keys])

    def __add__(self, other: Plan) -> Plan:
        return Plan.combine([self, other])


def lock_name(kind: str, *parts: str) -> str:
    """A readable, unambiguous advisory lock name, e.g. ``pg:table:["Sales EU","orders"]``."""
    return f"pg:{kind}:" + json.dumps(list(parts), ensure_ascii=False, separators=(",", ":"))


def topic(kind: str, role: str) -> str:
    """What a statement writes or a guard reads (see :class:`Statement`), per role:
    ``role`` (its existence), ``acl`` (any privilege granted to it directly: tables, columns,
    schemas, the database), ``members`` (who is a member of it), ``memberships`` (what it is a
    member of)."""
    return f"{kind}:{role}"


def _creates_role(st: Statement) -> bool:
    """A guarded ``CREATE ROLE name NOLOGIN`` (a principal or a package: it needs no other role; a
    login role created ``IN ROLE`` a group does, and keeps its place)."""
    return st.text.startswith("CREATE ROLE ") and st.text.endswith(" NOLOGIN") and st.guard is not None


def _is_last_lock(name: str) -> bool:
    """A database lock (``lock_name("database", …)``): taken after every other lock, see apply()."""
    return name.startswith("pg:database:")


def advisory_key(name: str) -> int:
    """A signed 64-bit advisory lock key: the first 8 bytes of sha256(name)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)
