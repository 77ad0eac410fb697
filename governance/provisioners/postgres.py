"""PostgreSQL adapter: make one target database hold exactly the privileges the portal decided.

The portal's database is the desired state; the target is the actual state. This module knows no
Django: the caller computes a :class:`Desired` (the UNION of every active grant of one principal on
one object), and this module plans SQL, applies it, reads back what the target really holds, and
observes many roles at once for the reconciler.

How a change is made, and why:

* **Plans are data.** :func:`plan_converge` and friends return a :class:`Plan`: an ordered tuple of
  :class:`Statement` built only with :mod:`psycopg2.sql` (every name is an ``Identifier``, every value
  a ``Literal``; no SQL text is ever built with Python string formatting), plus a sha256 ``digest`` of
  the rendered text. The same inputs always give the same text and digest, so the digest shown to an
  approver can be compared with the one a worker is about to apply ("plan changed, re-approve").
* **Converge, don't increment.** A converge plan does ``REVOKE ALL ON TABLE`` and then GRANTs the
  whole desired set, in ONE transaction. Other sessions see either the old or the new ACL, never the
  gap between the two (ACLs live in catalog rows, which are MVCC like any table). Because the
  desired set is the union of all active grants, a privilege another grant still needs is granted
  again in the same transaction, i.e. it never disappears. Running the same plan twice leaves the
  same ACL: applying is idempotent.
* **Column privileges.** Verified on PostgreSQL 15 (and documented for REVOKE): a table-level
  ``REVOKE ALL ON TABLE t FROM p`` also revokes every column-level privilege of ``p`` on ``t``, so the
  converge plan needs no per-column REVOKE and no read of ``pg_attribute.attacl`` first.
* **Serialised per object.** GRANT/REVOKE rewrite the object's catalog row (``pg_class.relacl``)
  without taking a lock on the table; two sessions changing the same table's ACL at once make the
  second fail with ``tuple concurrently updated``. :func:`apply` therefore takes transaction-level
  advisory locks (``pg_advisory_xact_lock``) on the caller's ``lock_key`` and on the keys the plan
  declares (the table), in a fixed order, before any statement; they are released by COMMIT or
  ROLLBACK, so a crashed worker cannot leave one behind. The schema's USAGE grant takes the schema's
  key only when it really has to write (see below), so converges of different tables of one schema
  still run in parallel; likewise the database's key for a principal's first ``GRANT CONNECT``.
* **Extra SQL outside the rendered statements, on purpose.** A few statements carry a *guard*: a
  read-only ``SELECT`` run first, the statement being skipped when the guard says it has nothing to
  do (``CREATE ROLE`` only when the role is missing, ``GRANT USAGE ON SCHEMA`` only when the
  principal lacks it, a pure revoke only when something is held). The guard's meaning is rendered
  in the plan text (``-- only if ...``), so the digest covers it. ``CREATE ROLE`` additionally runs
  inside a SAVEPOINT that tolerates "already exists" (a worker creating the same role concurrently
  on the same cluster: roles are cluster-wide, advisory locks are per database).
* **Verification reads DIRECT ACLs** (``aclexplode`` of ``pg_class.relacl`` / ``pg_attribute.attacl``
  for the principal's oid), not ``has_table_privilege``: the latter also counts privileges inherited
  from PUBLIC and from group roles, which would make a revoke look incomplete, or a missing grant
  look present. Only what the portal itself manages is compared.
* **Secrets** (JIT passwords) are hashed to a SCRAM verifier on the portal side (see
  :mod:`governance.provisioners.scram`), are ``Literal`` values marked secret, and are replaced by
  ``[REDACTED]`` in every rendering, digest, result and error message.

Privileges granted by another grantor than the portal's connection role survive the portal's REVOKE
(PostgreSQL revokes only what the current role, or for a superuser the object owner, granted);
verification then reports them as unexpected rather than hiding them.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from governance.provisioners.errors import PermanentError, ProvisioningError, TransientError
from governance.provisioners.scram import scram_sha256_verifier

logger = logging.getLogger(__name__)

APPLICATION_NAME = "governance-provisioner"
DEFAULT_LOCK_TIMEOUT_MS = 5_000
DEFAULT_STATEMENT_TIMEOUT_MS = 30_000
# A worker that dies between statements must not keep an advisory lock (and a transaction) open.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
REDACTED = "[REDACTED]"
PLAN_FORMAT = "pgplan/1"

# The order privileges are always listed in (plans, digests, messages).
PRIVILEGE_ORDER: tuple[str, ...] = (
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
    "MAINTAIN",
)
TABLE_PRIVILEGES = frozenset(PRIVILEGE_ORDER)
COLUMN_PRIVILEGES = frozenset({"SELECT", "INSERT", "UPDATE", "REFERENCES"})
MAINTAIN_SINCE = 170000  # server_version_num from which GRANT MAINTAIN exists
NAMEDATALEN = 63  # longest identifier, in bytes; PostgreSQL silently truncates longer ones


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


# ProvisioningError, TransientError and PermanentError are shared by both adapters: see errors.py.


_TRANSIENT_SQLSTATES: dict[str, str] = {
    "55P03": "lock timeout",
    "40001": "serialization failure",
    "40P01": "deadlock detected",
    "57014": "statement timeout or cancelled",
    "57P01": "server shutting down",
    "57P02": "server crashed",
    "57P03": "server not accepting connections yet",
    "53000": "server out of resources",
    "53100": "server disk full",
    "53200": "server out of memory",
    "53300": "too many connections",
    "53400": "server configuration limit exceeded",
    "58030": "server I/O error",
}
_PERMANENT_LABELS: dict[str, str] = {
    "42P01": "table does not exist",
    "42703": "column does not exist",
    "42501": "permission denied",
    "3F000": "schema does not exist",
    "42704": "role or object does not exist",
    "2BP01": "dependent objects or privileges exist",
    "42601": "syntax not supported by this server",
    "22023": "invalid parameter",
    "57P04": "database dropped",
}
# Connection failures PostgreSQL reports before any SQLSTATE exists (libpq text, English servers).
# Everything else at connect time is treated as transient: a target that is down comes back.
_PERMANENT_CONNECT_HINTS = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "role is not permitted to log in",
    "invalid sslmode",
    "certificate verify failed",
)
# A server that refuses a connection because it is full answers; it is not down.
_CAPACITY_HINTS = ("too many clients", "too many connections", "remaining connection slots")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _scrub(text: str, secret_values: Collection[str]) -> str:
    for value in secret_values:
        if value:
            text = text.replace(value, REDACTED)
    return text


def classify_error(
    exc: BaseException,
    *,
    secret_values: Collection[str] = (),
    statement: str | None = None,
    connecting_to: str | None = None,
) -> ProvisioningError:
    """Map a psycopg2 exception to a TransientError or PermanentError with a one-line message.

    The message uses the server's primary message only (never psycopg2's ``LINE 1: ...`` context,
    which quotes the statement) and is scrubbed of every secret value of the plan.
    """
    if isinstance(exc, ProvisioningError):
        return exc
    sqlstate: str | None = getattr(exc, "pgcode", None)
    diag = getattr(exc, "diag", None)
    primary = (getattr(diag, "message_primary", None) if diag is not None else None) or ""
    if not primary:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        primary = lines[0] if lines else type(exc).__name__
    primary = _one_line(primary).removeprefix("ERROR: ").strip()
    where = f"; statement: {_one_line(statement)}" if statement else ""

    error: ProvisioningError
    if connecting_to is not None:
        text = f"cannot connect to {connecting_to}: {primary}"
        if any(hint in primary for hint in _PERMANENT_CONNECT_HINTS):
            error = PermanentError(text, sqlstate=sqlstate, connection_lost=True)
        else:
            # The server answered "too many connections": it is up, only full. Ordinary backoff.
            full = (sqlstate or "").startswith("53") or any(hint in primary for hint in _CAPACITY_HINTS)
            error = TransientError(text, sqlstate=sqlstate, connection_lost=True, unreachable=not full)
    elif sqlstate is None and isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        error = TransientError(f"connection to target lost: {primary}{where}", connection_lost=True, unreachable=True)
    elif sqlstate is not None and (sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith("08")):
        label = _TRANSIENT_SQLSTATES.get(sqlstate, "connection failure")
        lost = sqlstate.startswith(("08", "57P"))
        error = TransientError(
            f"{label}: {primary} [SQLSTATE {sqlstate}]{where}",
            sqlstate=sqlstate,
            connection_lost=lost,
            unreachable=lost,
        )
    elif sqlstate == "XX000" and "tuple concurrently updated" in primary:
        # Two sessions rewrote the same catalog row (an ACL, a role). Retrying sees the winner's row.
        error = TransientError(f"concurrent catalog update: {primary} [SQLSTATE XX000]{where}", sqlstate=sqlstate)
    elif sqlstate == "23505" and (getattr(diag, "constraint_name", None) or "").startswith("pg_"):
        # A concurrent CREATE ROLE / GRANT role on the same cluster inserted the same catalog row.
        error = TransientError(f"concurrent catalog insert: {primary} [SQLSTATE 23505]{where}", sqlstate=sqlstate)
    else:
        label = _PERMANENT_LABELS.get(sqlstate or "", "target refused the statement")
        code = f" [SQLSTATE {sqlstate}]" if sqlstate else ""
        error = PermanentError(f"{label}: {primary}{code}{where}", sqlstate=sqlstate)
    error.message = _scrub(error.message, secret_values)
    error.args = (error.message,)
    return error


# ---------------------------------------------------------------------------------------------
# Value types
# ---------------------------------------------------------------------------------------------


def _check_identifier(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL")
    if len(value.encode("utf-8")) > NAMEDATALEN:
        raise ValueError(f"{what} is longer than {NAMEDATALEN} bytes; PostgreSQL would truncate it")


def check_role_name(value: str) -> None:
    """Raise ValueError, saying why, when `value` cannot be a role name the portal uses."""
    _check_role_name(value)


def _check_role_name(value: str, what: str = "role name") -> None:
    _check_identifier(value, what)
    if value in ("public", "none") or value.startswith("pg_"):
        raise ValueError(f"{what} {value!r} is reserved by PostgreSQL")


@dataclass(frozen=True)
class Target:
    """Where and as whom to connect. ``key`` identifies the target for pooling, without the password."""

    host: str
    port: int
    dbname: str
    user: str
    password: str = field(default="", repr=False)
    sslmode: str = "prefer"
    connect_timeout: int = 5
    sslrootcert: str = ""  # path of a CA bundle file (see governance.crypto.ca_bundle_path)

    @property
    def key(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}?sslmode={self.sslmode}"

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True, order=True)
class ObjectRef:
    """A table-like object: schema and name exactly as PostgreSQL stores them (any characters)."""

    schema: str
    name: str

    def __post_init__(self) -> None:
        _check_identifier(self.schema, "schema name")
        _check_identifier(self.name, "object name")

    def __str__(self) -> str:
        return display_name(self.schema) + "." + display_name(self.name)


def _order_privileges(privileges: Collection[str]) -> list[str]:
    return [p for p in PRIVILEGE_ORDER if p in privileges]


_NO_COLUMNS: Mapping[str, frozenset[str]] = MappingProxyType({})


def _freeze_columns(columns: Mapping[str, Collection[str]]) -> Mapping[str, frozenset[str]]:
    if not columns:
        return _NO_COLUMNS
    return MappingProxyType({c: frozenset(columns[c]) for c in sorted(columns) if columns[c]})


@dataclass(frozen=True)
class Privileges:
    """Table privileges and column privileges (column -> privileges) of one principal on one object."""

    table: frozenset[str] = frozenset()
    columns: Mapping[str, frozenset[str]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "table", frozenset(self.table))
        object.__setattr__(self, "columns", _freeze_columns(self.columns))

    @property
    def empty(self) -> bool:
        return not self.table and not self.columns

    def __or__(self, other: Privileges) -> Privileges:
        columns: dict[str, set[str]] = {c: set(p) for c, p in self.columns.items()}
        for column, privs in other.columns.items():
            columns.setdefault(column, set()).update(privs)
        return Privileges(self.table | other.table, {c: frozenset(p) for c, p in columns.items()})

    def normalized(self) -> Privileges:
        """Validated, upper-cased, with column privileges already covered by the table privilege
        dropped (a table-level SELECT makes a column-level SELECT redundant, so it is not granted
        and not expected by verify)."""
        table = frozenset(p.upper() for p in self.table)
        unknown = table - TABLE_PRIVILEGES
        if unknown:
            raise ValueError(f"unknown table privileges: {sorted(unknown)}")
        columns: dict[str, frozenset[str]] = {}
        for column, privs in self.columns.items():
            _check_identifier(column, "column name")
            upper = frozenset(p.upper() for p in privs)
            bad = upper - COLUMN_PRIVILEGES
            if bad:
                raise ValueError(f"privileges {sorted(bad)} cannot be granted on a column")
            if upper - table:
                columns[column] = upper - table
        return Privileges(table, columns)


def privileges_for_level(
    level: str, columns: Collection[str] | None = (), *, server_version_num: int | None = None
) -> Privileges:
    """What one grant of ``level`` ("read", "write", "admin") gives, optionally limited to ``columns``.

    * read  = SELECT; with columns: SELECT on those columns only.
    * write = SELECT, INSERT, UPDATE, DELETE; with columns: SELECT, INSERT, UPDATE on those columns
      and **no DELETE**: PostgreSQL has no column-level DELETE, and a table-level DELETE would let a
      grantee who may not see the excluded (e.g. PII) columns destroy whole rows, including them.
    * admin = every table privilege the server supports, listed explicitly (ALL is not used, so the
      plan and the verification name the same set): SELECT, INSERT, UPDATE, DELETE, TRUNCATE,
      REFERENCES, TRIGGER, and MAINTAIN from PostgreSQL 17 (``server_version_num`` >= 170000, see
      :func:`server_version_num`). Without a version, the set every supported server has (no
      MAINTAIN): plan and verify then agree on it everywhere, an admin just cannot VACUUM/ANALYZE.
      A column list is refused for admin (ValueError): it would silently be something else.
    """
    cols = sorted(set(columns or ()))  # None or () = the whole table
    for column in cols:
        _check_identifier(column, "column name")
    level = str(level).lower()
    if level == "read":
        base = frozenset({"SELECT"})
        column_base = base
    elif level == "write":
        base = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
        column_base = frozenset({"SELECT", "INSERT", "UPDATE"})
    elif level == "admin":
        if cols:
            raise ValueError("admin access cannot be limited to columns")
        with_maintain = server_version_num is not None and server_version_num >= MAINTAIN_SINCE
        supported = TABLE_PRIVILEGES if with_maintain else TABLE_PRIVILEGES - {"MAINTAIN"}
        return Privileges(supported)
    else:
        raise ValueError(f"unknown access level {level!r}")
    if cols:
        return Privileges(frozenset(), dict.fromkeys(cols, column_base))
    return Privileges(base)


def server_version_num(conn: PgConnection) -> int:
    """The target's ``server_version_num`` (e.g. 150020), known from the connection handshake."""
    return int(conn.server_version)


@dataclass(frozen=True)
class Package:
    """An access package: a NOLOGIN role holding one distinct set of privileges on one object.

    Grantees receive membership (``GRANT package TO principal``) instead of privileges of their own,
    so an object's ACL grows with the number of distinct packages, not of people. Named by
    :func:`governance.provisioners.pg_packages.package_name` (deterministic, at most 63 bytes).
    """

    name: str
    obj: ObjectRef
    privileges: Privileges

    def __post_init__(self) -> None:
        _check_role_name(self.name, "package role")
        object.__setattr__(self, "privileges", self.privileges.normalized())


@dataclass(frozen=True)
class Desired:
    """What ``principal`` must hold on ``obj``: the UNION of all its active grants there.

    Empty privileges mean the principal should hold nothing the portal manages on that object.
    Privileges are normalised (upper case, column privileges covered by the table privilege
    dropped) so that equal intentions compare, plan and digest the same.

    ``packaged``: the principal holds them through membership in ``packages`` (and nothing on the
    object directly); ``stale`` names packages of the object it must no longer be a member of. See
    :mod:`governance.provisioners.pg_packages`. Otherwise the principal holds them directly.
    """

    principal: str
    obj: ObjectRef
    table_privileges: frozenset[str] = frozenset()
    column_privileges: Mapping[str, frozenset[str]] = field(default_factory=dict, hash=False)
    packages: tuple[Package, ...] = ()
    stale: tuple[str, ...] = ()
    packaged: bool = False

    def __post_init__(self) -> None:
        _check_role_name(self.principal, "principal")
        norm = Privileges(self.table_privileges, self.column_privileges).normalized()
        object.__setattr__(self, "table_privileges", norm.table)
        object.__setattr__(self, "column_privileges", norm.columns)
        for name in self.stale:
            _check_role_name(name, "package role")
        if self.packages and not self.packaged:
            raise ValueError("packages are given for a desired state that is not packaged")
        if any(p.obj != self.obj for p in self.packages):
            raise ValueError("a package of another object")

    @classmethod
    def through(
        cls, principal: str, obj: ObjectRef, packages: Collection[Package], stale: Collection[str] = ()
    ) -> Desired:
        """``principal`` holds the union of ``packages`` through membership; ``stale`` it leaves."""
        ordered = tuple(sorted({p.name: p for p in packages}.values(), key=lambda p: p.name))
        keep = {p.name for p in ordered}
        total = Privileges()
        for package in ordered:
            total = total | package.privileges
        leave = tuple(sorted(set(stale) - keep))
        return cls(principal, obj, total.table, total.columns, ordered, leave, packaged=True)

    @classmethod
    def union(cls, principal: str, obj: ObjectRef, *grants: Privileges) -> Desired:
        total = Privileges()
        for grant in grants:
            total = total | grant
        return cls(principal, obj, total.table, total.columns)

    @property
    def privileges(self) -> Privileges:
        return Privileges(self.table_privileges, self.column_privileges)

    @property
    def empty(self) -> bool:
        return not self.table_privileges and not self.column_privileges


# ---------------------------------------------------------------------------------------------
# Rendering (display and digest only; execution always uses the Composable itself)
# ---------------------------------------------------------------------------------------------

_BARE_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def _quote_ident(name: str) -> str:
    # Exactly what libpq's PQescapeIdentifier (psycopg2's Identifier) produces for a valid string;
    # a test compares both renderings on hostile names.
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    # What psycopg2 produces with standard_conforming_strings = on (every supported server default).
    return "'" + value.replace("'", "''") + "'"


def display_name(name: str) -> str:
    """A name as a person reads it in messages: bare when plain lower-case, quoted otherwise."""
    shown = name if _BARE_NAME.fullmatch(name) else _quote_ident(name)
    return shown.replace("\n", "\\n").replace("\r", "\\r")


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
    raise TypeError(f"cannot render {type(composable).__name__}")


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a plan.

    ``query`` is what runs. ``text`` is its rendering with secrets redacted. ``guard`` (optional) is
    a read-only query returning one boolean, run first: False skips the statement; ``condition``
    says in words what the guard checks and is part of the plan text and digest. ``locks`` are
    advisory lock names taken only when the statement really runs (and the guard is then checked
    again). ``tolerate`` lists SQLSTATEs meaning "already done": the statement then runs inside a
    SAVEPOINT and such an error is rolled back to it instead of failing the plan.
    """

    query: sql.Composable = field(repr=False)
    text: str
    guard: sql.Composable | None = field(default=None, repr=False)
    condition: str | None = None
    locks: tuple[str, ...] = ()
    tolerate: frozenset[str] = frozenset()
    secret_values: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @classmethod
    def of(
        cls,
        query: sql.Composable,
        *,
        guard: sql.Composable | None = None,
        condition: str | None = None,
        locks: tuple[str, ...] = (),
        tolerate: Collection[str] = (),
        secret_values: Collection[str] = (),
    ) -> Statement:
        hidden = frozenset(secret_values)
        return cls(query, render(query, hidden), guard, condition, locks, frozenset(tolerate), hidden)

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
        # The database lock is the last lock any transaction takes (see apply()): the statements
        # that take it (GRANT CONNECT) move to the end, in their order; each still follows its
        # principal's CREATE ROLE.
        statements.sort(key=lambda st: any(_is_last_lock(k) for k in st.locks))
        return cls.build(statements, [key for plan in plans for key in plan.lock_keys])

    def __add__(self, other: Plan) -> Plan:
        return Plan.combine([self, other])


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------


def lock_name(kind: str, *parts: str) -> str:
    """A readable, unambiguous advisory lock name, e.g. ``pg:table:["Sales EU","orders"]``."""
    return f"pg:{kind}:" + json.dumps(list(parts), ensure_ascii=False, separators=(",", ":"))


def _is_last_lock(name: str) -> bool:
    """A database lock (``lock_name("database", …)``): taken after every other lock, see apply()."""
    return name.startswith("pg:database:")


def advisory_key(name: str) -> int:
    """A signed 64-bit advisory lock key: the first 8 bytes of sha256(name)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


def _role_missing_guard(name: str) -> sql.Composable:
    return sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {})").format(sql.Literal(name))


_HAS_DIRECT_USAGE = sql.SQL(
    "EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a"
    " JOIN pg_catalog.pg_roles r ON r.oid = a.grantee"
    " WHERE n.nspname = {schema} AND r.rolname = {role} AND a.privilege_type = 'USAGE')"
)


def _usage_guard(principal: str, schema: str, *, present: bool) -> sql.Composable:
    check = _HAS_DIRECT_USAGE.format(schema=sql.Literal(schema), role=sql.Literal(principal))
    return sql.SQL("SELECT {}").format(check) if present else sql.SQL("SELECT NOT {}").format(check)


@functools.lru_cache(maxsize=4096)  # pure, and a batch needs the same few statements hundreds of times
def _create_role_statement(name: str, *, login: bool) -> Statement:
    query = sql.SQL("CREATE ROLE {} {}").format(sql.Identifier(name), sql.SQL("LOGIN" if login else "NOLOGIN"))
    return Statement.of(
        query,
        guard=_role_missing_guard(name),
        condition=f"role {display_name(name)} does not exist",
        tolerate=("42710", "23505"),  # duplicate_object / unique_violation: created concurrently
    )


@functools.lru_cache(maxsize=4096)
def _grant_usage_statement(principal: str, schema: str) -> Statement:
    query = sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(principal))
    return Statement.of(
        query,
        guard=_usage_guard(principal, schema, present=False),
        condition=f"{display_name(principal)} lacks USAGE on schema {display_name(schema)}",
        locks=(lock_name("schema", schema),),
    )


_HAS_DIRECT_CONNECT = sql.SQL(
    "EXISTS (SELECT 1 FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a"
    " JOIN pg_catalog.pg_roles r ON r.oid = a.grantee"
    " WHERE d.datname = {database} AND r.rolname = {role} AND a.privilege_type = 'CONNECT')"
)


@functools.lru_cache(maxsize=4096)
def _grant_connect_statement(principal: str, database: str) -> Statement:
    """``GRANT CONNECT ON DATABASE d TO p``, d being the governed database (the one the plan runs in).

    Why: PUBLIC holds CONNECT on every database by default, so a role the portal creates could
    connect to every database of the cluster (a JIT login inherits from it). docs/security.md has
    the DBA revoke PUBLIC's CONNECT everywhere; then only what is granted explicitly connects, and
    the portal grants its managed roles CONNECT on the governed database only. A JIT login holds
    nothing itself: it inherits CONNECT from the principal it is a member of, so dropping it needs
    no REVOKE first.

    Guarded: runs only while p lacks CONNECT directly (a role made before this existed gets it on
    its next converge) and while the portal's role holds CONNECT WITH GRANT OPTION (without it,
    PostgreSQL would only warn "no privileges were granted"; the reconciler's posture check says
    so instead). The GRANT rewrites the database's catalog row, which two sessions must not do at
    once ("tuple concurrently updated"), so it takes the database's advisory lock, lazily (only
    the first grant of each principal writes) and last: it ends every plan, after the schema
    locks (see :func:`apply`).
    """
    query = sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), sql.Identifier(principal))
    guard = sql.SQL("SELECT NOT {} AND pg_catalog.has_database_privilege({}, 'CONNECT WITH GRANT OPTION')").format(
        _HAS_DIRECT_CONNECT.format(database=sql.Literal(database), role=sql.Literal(principal)), sql.Literal(database)
    )
    condition = (
        f"{display_name(principal)} lacks CONNECT on database {display_name(database)} and the portal may grant it"
    )
    return Statement.of(query, guard=guard, condition=condition, locks=(lock_name("database", database),))


def _connect_statements(name: str, database: str | None) -> list[Statement]:
    """With ``database`` (the governed one): the managed principal's CONNECT on it; else nothing."""
    if database is None:
        return []
    _check_identifier(database, "database name")
    return [_grant_connect_statement(name, database)]


def plan_converge(
    desired: Desired, *, managed_principal: bool, login: bool = False, database: str | None = None
) -> Plan:
    """The statements that make ``desired.principal`` hold exactly ``desired`` on ``desired.obj``.

    Non-empty desired state:
      1. ``CREATE ROLE p NOLOGIN`` (``LOGIN`` when ``login``) if ``managed_principal`` and the role is
         missing; an existing role's attributes are never changed;
      2. ``GRANT USAGE ON SCHEMA s TO p`` if p lacks it directly;
      3. ``REVOKE ALL ON TABLE s.t FROM p`` (also removes p's column privileges on s.t);
      4. ``GRANT <table privileges> ON TABLE s.t TO p``;
      5. ``GRANT SELECT (c1, c2), ... ON TABLE s.t TO p``;
      6. ``GRANT CONNECT ON DATABASE d TO p`` if ``managed_principal``, ``database`` (the governed
         database d) is given and p lacks it (see :func:`_grant_connect_statement`).
    Empty desired state: only ``REVOKE ALL ON TABLE s.t FROM p``, run only if p holds something on
    s.t directly, so that a revoke of an already-dropped table or role succeeds (converged).

    USAGE on the schema is never revoked here (another object of the schema may still be granted):
    the caller uses :func:`plan_schema_usage` once the principal has nothing left in the schema.
    """
    if desired.packaged:
        raise ValueError("a packaged desired state is planned by pg_packages.plan_converge()")
    p = desired.principal
    obj = desired.obj
    lock_keys = [lock_name("table", obj.schema, obj.name)]

    if desired.empty:
        return Plan.build([revoke_held_statement(p, obj)], lock_keys)

    statements: list[Statement] = []
    if managed_principal:
        statements.append(_create_role_statement(p, login=login))
    statements.append(_grant_usage_statement(p, obj.schema))
    statements += [Statement.of(query) for query in exact_grant_queries(p, obj, desired.privileges)]
    if managed_principal:
        statements += _connect_statements(p, database)  # last: it may take the database lock
    return Plan.build(statements, lock_keys)


def holds_directly(role: str, obj: ObjectRef) -> sql.Composable:
    """A boolean SQL expression: ``role`` holds a table or column privilege on ``obj`` directly."""
    return sql.SQL(
        "EXISTS (SELECT 1 FROM pg_catalog.pg_class c"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " JOIN pg_catalog.pg_roles r ON r.rolname = {role}"
        " WHERE n.nspname = {schema} AND c.relname = {name} AND ("
        "EXISTS (SELECT 1 FROM pg_catalog.aclexplode(c.relacl) a WHERE a.grantee = r.oid)"
        " OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute att, pg_catalog.aclexplode(att.attacl) a"
        " WHERE att.attrelid = c.oid AND att.attnum > 0 AND a.grantee = r.oid)))"
    ).format(role=sql.Literal(role), schema=sql.Literal(obj.schema), name=sql.Literal(obj.name))


def revoke_held_statement(role: str, obj: ObjectRef) -> Statement:
    """``REVOKE ALL ON TABLE obj FROM role``, run only while ``role`` holds something there directly
    (so that a revoke of an already-dropped table or role succeeds: converged)."""
    revoke = sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(
        sql.Identifier(obj.schema, obj.name), sql.Identifier(role)
    )
    guard = sql.SQL("SELECT {}").format(holds_directly(role, obj))
    return Statement.of(revoke, guard=guard, condition=f"{display_name(role)} holds privileges on {obj} directly")


def exact_grant_queries(role: str, obj: ObjectRef, privileges: Privileges) -> list[sql.Composable]:
    """``REVOKE ALL ON TABLE`` then the GRANTs of exactly ``privileges`` (normalised): run in one
    transaction, the role holds exactly them on ``obj`` with no gap for other sessions."""
    privileges = privileges.normalized()
    role_id = sql.Identifier(role)
    table = sql.Identifier(obj.schema, obj.name)
    queries: list[sql.Composable] = [sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(table, role_id)]
    table_privs = _order_privileges(privileges.table)
    if table_privs:
        queries.append(
            sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                sql.SQL(", ").join(sql.SQL(priv) for priv in table_privs), table, role_id
            )
        )
    by_privilege: dict[str, list[str]] = {}
    for column in sorted(privileges.columns):
        for priv in privileges.columns[column]:
            by_privilege.setdefault(priv, []).append(column)
    if by_privilege:
        parts = [
            sql.SQL("{} ({})").format(sql.SQL(priv), sql.SQL(", ").join(sql.Identifier(c) for c in by_privilege[priv]))
            for priv in _order_privileges(by_privilege)
        ]
        queries.append(sql.SQL("GRANT {} ON TABLE {} TO {}").format(sql.SQL(", ").join(parts), table, role_id))
    return queries


def plan_schema_usage(principal: str, schema: str, keep: bool) -> Plan:
    """GRANT (``keep``) or REVOKE USAGE on ``schema``; each runs only when it changes something."""
    _check_role_name(principal, "principal")
    _check_identifier(schema, "schema name")
    if keep:
        return Plan.build([_grant_usage_statement(principal, schema)])
    query = sql.SQL("REVOKE USAGE ON SCHEMA {} FROM {}").format(sql.Identifier(schema), sql.Identifier(principal))
    statement = Statement.of(
        query,
        guard=_usage_guard(principal, schema, present=True),
        condition=f"{display_name(principal)} holds USAGE on schema {display_name(schema)} directly",
    )
    return Plan.build([statement], [lock_name("schema", schema)])


def plan_ensure_role(name: str, *, database: str | None = None) -> Plan:
    """``CREATE ROLE name NOLOGIN`` when it does not exist yet (a managed principal), and with
    ``database`` its CONNECT on the governed database (as in :func:`plan_converge`)."""
    _check_role_name(name)
    return Plan.build([_create_role_statement(name, login=False), *_connect_statements(name, database)])


def plan_membership(member: str, group: str, present: bool) -> Plan:
    """``GRANT group TO member`` or ``REVOKE group FROM member``.

    The REVOKE runs only while both roles exist, so revoking from an already-dropped role converges.
    A REVOKE may name a predefined ``pg_*`` group (the reconciler undoing an out-of-band
    ``GRANT pg_read_all_data TO …``); a GRANT never does.
    """
    _check_role_name(member, "member")
    if present or not group.startswith("pg_"):
        _check_role_name(group, "group")
    else:
        _check_identifier(group, "group")
    if present:
        return Plan.build(
            [Statement.of(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(member)))]
        )
    guard = sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m"
        " JOIN pg_catalog.pg_roles g ON g.oid = m.roleid JOIN pg_catalog.pg_roles r ON r.oid = m.member"
        " WHERE g.rolname = {} AND r.rolname = {})"
    ).format(sql.Literal(group), sql.Literal(member))
    statement = Statement.of(
        sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), sql.Identifier(member)),
        guard=guard,
        condition=f"{display_name(member)} is a member of {display_name(group)}",
    )
    return Plan.build([statement])


def _valid_until_text(valid_until: datetime | None) -> str:
    if valid_until is None:
        return "infinity"
    if valid_until.tzinfo is None or valid_until.utcoffset() is None:
        raise ValueError("valid_until must be timezone-aware")
    return valid_until.isoformat()


def plan_login_role(name: str, password: str, valid_until: datetime | None, member_of: str | Collection[str]) -> Plan:
    """A JIT login role: ``CREATE ROLE name LOGIN PASSWORD '…' VALID UNTIL '…' IN ROLE group``.

    The password is sent as a SCRAM-SHA-256 verifier computed here (the plaintext never reaches the
    target or its logs), as a secret Literal: the plan text, digest and errors show '[REDACTED]'.
    Idempotent: CREATE runs only while the role is missing; ALTER ROLE and GRANT then (re)assert the
    password, expiry and memberships, so a retried job converges to the same role. Roles named
    here must be in the portal's own namespace (prefix): an existing role of that name is taken over.
    """
    _check_role_name(name, "login role")
    groups = sorted({member_of} if isinstance(member_of, str) else set(member_of))
    for group in groups:
        _check_role_name(group, "group")
    verifier = scram_sha256_verifier(password)
    until = sql.Literal(_valid_until_text(valid_until))
    secret = (verifier,)
    role = sql.Identifier(name)
    in_role = (
        sql.SQL(" IN ROLE {}").format(sql.SQL(", ").join(sql.Identifier(g) for g in groups)) if groups else sql.SQL("")
    )
    create = Statement.of(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} VALID UNTIL {}{}").format(
            role, sql.Literal(verifier), until, in_role
        ),
        guard=_role_missing_guard(name),
        condition=f"role {display_name(name)} does not exist",
        tolerate=("42710", "23505"),
        secret_values=secret,
    )
    alter = Statement.of(
        sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {} VALID UNTIL {}").format(role, sql.Literal(verifier), until),
        secret_values=secret,
    )
    statements = [create, alter]
    statements += [Statement.of(sql.SQL("GRANT {} TO {}").format(sql.Identifier(g), role)) for g in groups]
    return Plan.build(statements)


def plan_drop_role(name: str) -> Plan:
    """End a login role: terminate its sessions, then ``DROP ROLE IF EXISTS``.

    Meant for roles the portal created that own nothing and hold only memberships (JIT login
    roles); DROP ROLE removes the memberships. Terminating other roles' sessions needs superuser or
    membership in ``pg_signal_backend``. A login that races in between the terminate and the commit
    of the DROP survives until it disconnects (VALID UNTIL already bounds new logins at expiry).
    """
    _check_role_name(name, "role")
    terminate = sql.SQL(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity"
        " WHERE usename = {} AND pid <> pg_catalog.pg_backend_pid()"
    ).format(sql.Literal(name))
    drop = sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name))
    return Plan.build([Statement.of(terminate), Statement.of(drop)])


# ---------------------------------------------------------------------------------------------
# Applying
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """A read-only query that :func:`apply` runs right after its COMMIT, in the same round trip,
    and how to read its one row: verification after commit at no extra round trip. ``query`` is
    complete (parameters bound with :func:`bind`); with ``prepared`` it is the EXECUTE of that
    prepared statement (see :class:`Prepared`)."""

    query: bytes
    read: Callable[[tuple[Any, ...] | None], Any]
    prepared: Prepared | None = None

    def first(self) -> Check:
        """The same check reading only the first of the lists it returns (one desired state)."""
        return Check(self.query, lambda row: self.read(row)[0], self.prepared)

    def sql_on(self, conn: PgConnection) -> bytes:
        """What to send on ``conn``: the query, preceded by its PREPARE when ``conn`` lacks it."""
        if self.prepared is None or self.prepared.name in _PREPARED.get(_session(conn), ()):
            return self.query
        # A session we know nothing of (new, or after an error): start from no prepared statement.
        reset = b"" if _session(conn) in _PREPARED else b"DEALLOCATE ALL; "
        return reset + self.prepared.statement + b"; " + self.query

    def sent(self, conn: PgConnection) -> None:
        """The query ran on ``conn``: its prepared statement exists there from now on."""
        if self.prepared is not None:
            _PREPARED.setdefault(_session(conn), set()).add(self.prepared.name)

    def run(self, conn: PgConnection, what: str) -> Any:
        """The same check on its own (a read-only transaction), for a caller that applied nothing."""
        try:
            with _read(conn, what) as cur:
                cur.execute(self.sql_on(conn))
                row = cur.fetchone()
        except ProvisioningError:
            forget_prepared(conn)
            raise
        self.sent(conn)
        return self.read(row)


@dataclass(frozen=True)
class Prepared:
    """A server-side prepared statement, made once per target session. The verification queries
    are large catalog queries whose planning costs several times their execution (~6 ms against
    ~0.6 ms on a 2-core machine): prepared, PostgreSQL plans them once per session, not per job.

    ``template`` uses psycopg2's ``%(key)s`` placeholders, each followed by a cast (its type);
    ``keys`` gives their order."""

    name: str
    statement: bytes
    keys: tuple[str, ...]

    @classmethod
    def of(cls, name: str, template: sql.Composable, keys: Sequence[str]) -> Prepared:
        text = render(template)
        for n, key in enumerate(keys, start=1):
            text = text.replace(f"%({key})s", f"${n}")
        if "%(" in text:
            raise ValueError(f"{name}: a placeholder is not among the keys")
        prepare = sql.SQL("PREPARE {} AS {}").format(sql.Identifier(name), sql.SQL(text))
        return cls(name, render(prepare).encode(), tuple(keys))

    def execute(self, conn: PgConnection, params: Mapping[str, Any]) -> bytes:
        query = sql.SQL("EXECUTE {}({})").format(
            sql.Identifier(self.name), sql.SQL(", ").join(sql.Placeholder() for _ in self.keys)
        )
        return bind(conn, query, [params[k] for k in self.keys])


# (connection id, backend pid) -> the names prepared in that session by this process.
_PREPARED: dict[tuple[int, int], set[str]] = {}


def _session(conn: PgConnection) -> tuple[int, int]:
    return (id(conn), conn.info.backend_pid)


def forget_prepared(conn: PgConnection) -> None:
    """After an error on ``conn``: what it has prepared is unknown (the next use starts afresh)."""
    if not conn.closed:
        _PREPARED.pop(_session(conn), None)


def bind(conn: PgConnection, query: str | sql.Composable, params: Any) -> bytes:
    """``query`` with ``params`` bound by libpq's quoting on ``conn`` (no round trip)."""
    with conn.cursor() as cur:
        return cur.mogrify(query, params)


@dataclass(frozen=True)
class ApplyResult:
    """What ran (texts, secrets redacted), what a guard skipped, and how long the transaction took;
    ``checked`` is what the :class:`Check` given to :func:`apply` read after the commit."""

    digest: str
    preamble: str
    statements: tuple[str, ...]  # executed, in order
    skipped: tuple[str, ...]
    elapsed_ms: float
    checked: Any = None


def _require_idle(conn: PgConnection, what: str) -> None:
    if conn.closed:
        raise TransientError(f"{what}: the connection is closed", connection_lost=True)
    if conn.autocommit:
        raise ValueError(f"{what} needs a connection with autocommit off (one transaction per call)")
    if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        raise ValueError(f"{what} needs a connection with no open transaction")


def _rollback_quietly(conn: PgConnection) -> None:
    if not conn.closed:
        with suppress(psycopg2.Error):
            conn.rollback()


def _end_in_band(conn: PgConnection) -> None:
    """After :func:`apply` ran its own BEGIN/COMMIT with autocommit on: roll back whatever is left
    open (a failure mid-transaction) and give the connection back with autocommit off."""
    if conn.closed:
        return
    with suppress(psycopg2.Error):
        if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            with conn.cursor() as cur:
                cur.execute("ROLLBACK")
    with suppress(psycopg2.Error):
        conn.autocommit = False


def _lock_sql(keys: Sequence[int]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("pg_catalog.pg_advisory_xact_lock({})").format(sql.Literal(k)) for k in keys)


def _guard_passes(cur: Any, guard: sql.Composable) -> bool:
    cur.execute(guard)
    row = cur.fetchone()
    return bool(row and row[0])


def _guards_query(guards: Sequence[sql.Composable]) -> sql.Composable:
    """Several guards (each a query returning one boolean) answered in one row."""
    return sql.SQL("SELECT {}").format(sql.SQL(", ").join(sql.SQL("({})").format(g) for g in guards))


def apply(
    conn: PgConnection,
    plan: Plan,
    *,
    lock_key: str,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS,
    check: Check | None = None,
) -> ApplyResult:
    """Run ``plan`` in one transaction on ``conn`` and commit; then ``check``, if given.

    First, in one round trip: ``SET LOCAL lock_timeout`` and ``statement_timeout`` (as
    ``set_config(..., true)``) and ``pg_advisory_xact_lock`` on ``lock_key`` and the plan's lock keys,
    in ascending key order (every worker takes them in the same order, so they cannot deadlock). The
    lock serialises all work on the same object of this database across workers; ``lock_timeout``
    bounds the wait (a TransientError, retried later). Advisory locks live per database, which is
    the scope of a table's ACL. Then each statement (see :class:`Statement` for guards, lazy locks
    and savepoints), then COMMIT. A lazy (schema) lock is only ever taken after the object locks and
    is the last lock a transaction takes but one, so it cannot close a wait cycle either; a plan
    with several (a batch's combined plan) takes them all right after the object locks, in key
    order. The one after it is the database lock of ``GRANT CONNECT``, which ends every plan (a
    combined plan moves those statements to its end) and is always taken lazily: every
    transaction takes its locks in the same order (objects, schemas, the database).

    Round trips, each one where the next step needs an answer (the floor, a bare REVOKE + GRANT
    transaction through psycopg2, takes four: BEGIN, two statements, COMMIT):

    - BEGIN and COMMIT travel with the statements (the connection is in autocommit for the
      duration of the call, the transaction is explicit), never on their own;
    - statements that need no answer are sent together with the next guard, or with the COMMIT;
    - consecutive guarded statements have their guards answered together, in one row: the answer
      of a later guard stands as long as every statement before it was skipped (nothing changed in
      between); when one must run, the next guards are asked again after it;
    - ``check`` (the verification) runs after COMMIT in the same round trip, in its own implicit
      transaction: it sees what was committed, as a separate query after the commit would, and
      runs only when the commit succeeded.
    A converge of a grantee into an existing package is then: BEGIN + preamble + three guards;
    the GRANT + two guards; COMMIT + verification.

    Any failure rolls the whole transaction back: the target is left as it was. Raises
    TransientError or PermanentError (messages name the statements that were sent, secrets
    redacted).
    """
    _require_idle(conn, "apply()")
    if lock_timeout_ms <= 0 or statement_timeout_ms <= 0:
        raise ValueError("timeouts must be positive (0 would mean: wait for ever)")
    keys = sorted({advisory_key(lock_key), *(advisory_key(k) for k in plan.lock_keys)})
    preamble = sql.SQL(
        "SELECT set_config('lock_timeout', {}, true), set_config('statement_timeout', {}, true), {}"
    ).format(sql.Literal(str(int(lock_timeout_ms))), sql.Literal(str(int(statement_timeout_ms))), _lock_sql(keys))
    preamble_text = render(preamble)
    hidden = plan.secret_values
    executed: list[str] = []
    skipped: list[str] = []
    # Statements that need no answer are sent together, in one round trip with the next query that
    # does (a guard) or with the last ones. Entries: (query, text for errors, plan line or None).
    pending: list[tuple[sql.Composable, str, str | None]] = [
        (sql.SQL("BEGIN"), "BEGIN", None),
        (preamble, preamble_text, None),
    ]
    # The database lock (GRANT CONNECT, at the end of every plan) stays lazy whatever happens: it
    # is the last lock of every transaction, after the object and schema locks.
    lazy = sorted({advisory_key(k) for st in plan.statements for k in st.locks if not _is_last_lock(k)})
    if len(lazy) > 1:
        # A combined plan (a batch) would take several lazy (schema) locks mid-transaction in plan
        # order, and two batches could then wait on each other. Take them all now, in key order,
        # after the object locks: every transaction takes object locks first, then schema locks,
        # each group in ascending order, so no wait cycle can form.
        eager = sql.SQL("SELECT {}").format(_lock_sql(lazy))
        pending.append((eager, render(eager), None))
    current = preamble_text
    statements = plan.statements
    # Answers of guards asked ahead (statement index -> answer), valid while nothing ran since.
    answers: dict[int, bool] = {}
    checked: Any = None
    started = time.perf_counter()

    def send(cur: Any, final: sql.Composable | bytes | None = None, final_text: str = "") -> Any:
        """Run the pending statements, then ``final`` (if any), in one round trip; the answer is
        the first row of ``final``."""
        nonlocal current
        queries = [q for q, _, _ in pending] + ([final] if final is not None else [])
        if not queries:
            return None
        current = "; ".join([text for _, text, _ in pending] + ([final_text] if final is not None else []))
        parts = [q.as_string(conn) if isinstance(q, sql.Composable) else q.decode() for q in queries]
        cur.execute("; ".join(parts))
        executed.extend(line for _, _, line in pending if line is not None)
        pending.clear()
        if final is None:
            return None
        return cur.fetchone()

    def guard_passes(cur: Any, i: int) -> bool:
        """Statement i's guard; asked together with the guards of the guarded statements that
        directly follow it (their answers kept for as long as nothing runs)."""
        if i in answers:
            return answers.pop(i)
        ahead = [i]
        while ahead[-1] + 1 < len(statements) and statements[ahead[-1] + 1].guard is not None:
            ahead.append(ahead[-1] + 1)
        row = send(
            cur,
            _guards_query([statements[j].guard for j in ahead]),
            f"guard of: {statements[i].text}",
        )
        answers.clear()
        answers.update({j: bool(row and row[n]) for n, j in enumerate(ahead)})
        return answers.pop(i)

    conn.autocommit = True  # BEGIN and COMMIT are sent in-band (see above); restored below
    try:
        with conn.cursor() as cur:
            for i, st in enumerate(statements):
                if st.guard is not None and not guard_passes(cur, i):
                    skipped.append(st.line)
                    continue
                answers.clear()  # this statement runs: what was asked ahead may change
                if st.locks:
                    # Taken only when the statement must run; then the guard is checked again, as
                    # another worker may have done the work while this one waited for the lock.
                    lock = sql.SQL("SELECT {}").format(_lock_sql(sorted(advisory_key(k) for k in st.locks)))
                    pending.append((lock, render(lock), None))
                    if st.guard is not None:
                        row = send(cur, st.guard, f"guard of: {st.text}")
                        if not (row and row[0]):
                            skipped.append(st.line)
                            continue
                if not st.tolerate:
                    pending.append((st.query, st.text, st.line))
                    continue
                send(cur)
                current = st.text
                try:
                    cur.execute(sql.SQL("SAVEPOINT gov_provision; {}").format(st.query))
                except psycopg2.Error as exc:
                    if exc.pgcode not in st.tolerate:
                        raise
                    cur.execute("ROLLBACK TO SAVEPOINT gov_provision")
                    skipped.append(st.line)
                    continue
                executed.append(st.line)
                release = "RELEASE SAVEPOINT gov_provision"
                pending.append((sql.SQL(release), release, None))
            pending.append((sql.SQL("COMMIT"), "COMMIT", None))
            if check is None:
                send(cur)
            else:
                checked = check.read(send(cur, check.sql_on(conn), "the verification after COMMIT"))
                check.sent(conn)
    except psycopg2.Error as exc:
        _end_in_band(conn)
        forget_prepared(conn)
        error = classify_error(exc, secret_values=hidden, statement=current)
        # A plan with secrets must not chain psycopg2's exception: its text may quote the statement.
        raise error from (None if hidden else exc)
    except BaseException:
        _end_in_band(conn)
        raise
    _end_in_band(conn)
    elapsed_ms = (time.perf_counter() - started) * 1000
    return ApplyResult(plan.digest, preamble_text, tuple(executed), tuple(skipped), elapsed_ms, checked)


# ---------------------------------------------------------------------------------------------
# Verifying
# ---------------------------------------------------------------------------------------------

VERIFY_SQL = """
WITH pair AS (
    SELECT * FROM unnest(%(idx)s::int[], %(role)s::text[], %(schema)s::text[], %(name)s::text[],
                         %(need_usage)s::bool[]) AS p(idx, role, schema, name, need_usage)
), rel AS (
    SELECT p.idx, c.oid, c.relacl FROM pair p
    JOIN pg_catalog.pg_namespace n ON n.nspname = p.schema
    JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = p.name
), who AS (
    SELECT p.idx, r.oid FROM pair p JOIN pg_catalog.pg_roles r ON r.rolname = p.role
), held AS (
    SELECT rel.idx, NULL::text AS col, a.privilege_type AS priv, a.grantor
    FROM rel JOIN who USING (idx), pg_catalog.aclexplode(rel.relacl) a WHERE a.grantee = who.oid
    UNION
    SELECT rel.idx, att.attname::text, a.privilege_type, a.grantor
    FROM rel JOIN who USING (idx)
    JOIN pg_catalog.pg_attribute att ON att.attrelid = rel.oid AND att.attnum > 0 AND NOT att.attisdropped,
    pg_catalog.aclexplode(att.attacl) a
    WHERE a.grantee = who.oid
), have AS (
    SELECT DISTINCT idx, col, priv FROM held
), want AS (
    SELECT * FROM unnest(%(widx)s::int[], %(wcol)s::text[], %(wpriv)s::text[]) AS w(idx, col, priv)
)
SELECT idx, 'missing', col, priv, NULL FROM (SELECT idx, col, priv FROM want EXCEPT SELECT idx, col, priv FROM have) m
UNION ALL
-- An unexpected privilege granted on another role's authority than ours (the table owner's, say)
-- survives our REVOKE: name that grantor, so that whoever reads the failure knows who must act.
SELECT u.idx, 'unexpected', u.col, u.priv, (
    SELECT string_agg(DISTINCT pg_catalog.pg_get_userbyid(h.grantor), ', '
                      ORDER BY pg_catalog.pg_get_userbyid(h.grantor)) FROM held h
    WHERE h.idx = u.idx AND h.col IS NOT DISTINCT FROM u.col AND h.priv = u.priv
      AND NOT pg_catalog.pg_has_role(h.grantor, 'USAGE'))
FROM (SELECT idx, col, priv FROM have EXCEPT SELECT idx, col, priv FROM want) u
UNION ALL
SELECT p.idx, 'no_table', NULL, NULL, NULL FROM pair p WHERE NOT EXISTS (SELECT 1 FROM rel WHERE rel.idx = p.idx)
UNION ALL
SELECT p.idx, 'no_role', NULL, NULL, NULL FROM pair p WHERE NOT EXISTS (SELECT 1 FROM who WHERE who.idx = p.idx)
UNION ALL
SELECT p.idx, 'no_usage', NULL, NULL, NULL FROM pair p WHERE p.need_usage AND NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a, who
    WHERE who.idx = p.idx AND n.nspname = p.schema AND a.grantee = who.oid AND a.privilege_type = 'USAGE')
"""


@contextmanager
def _read(conn: PgConnection, what: str) -> Iterator[Any]:
    """A read-only transaction that is always ended (a pooled connection must not stay 'idle in
    transaction'); psycopg2 errors become ProvisioningErrors."""
    _require_idle(conn, what)
    try:
        with conn.cursor() as cur:
            yield cur
    except psycopg2.Error as exc:
        _rollback_quietly(conn)
        raise classify_error(exc, statement=what) from exc
    finally:
        _rollback_quietly(conn)


def _priv_rank(priv: str | None) -> int:
    return PRIVILEGE_ORDER.index(priv) if priv in PRIVILEGE_ORDER else len(PRIVILEGE_ORDER)


def verify(conn: PgConnection, desired: Desired) -> list[str]:
    """Differences between ``desired`` and the DIRECT privileges of the principal on the object.

    Inherited privileges (PUBLIC, group roles) are ignored on purpose: they are not the portal's to
    grant or revoke. Empty list = verified. See :func:`verify_many`.
    """
    return verify_many(conn, [desired])[0]


def verify_many(conn: PgConnection, desireds: Sequence[Desired]) -> list[list[str]]:
    """:func:`verify` for many (principal, object) pairs in ONE query; one list per pair, in order.
    Packaged desired states are verified by :func:`governance.provisioners.pg_packages.verify_many`.

    The desired (privilege) and (column, privilege) pairs are ``unnest``-ed arrays tagged with the
    pair's index, the actual ones come from ``aclexplode`` of the tables' and columns' ACLs for the
    principals' oids, compared with EXCEPT both ways (a query per pair would be ~15x slower).
    """
    return verify_check(conn, desireds).run(conn, "verify()")


def verify_params(desireds: Sequence[Desired]) -> dict[str, list[Any]]:
    """The parameters of :data:`VERIFY_SQL` (its rows: index, kind, column, privilege, grantors)."""
    if any(d.packaged for d in desireds):
        raise ValueError("packaged desired states are verified by pg_packages.verify_many()")
    idx: list[int] = []
    widx: list[int] = []
    wcol: list[str | None] = []
    wpriv: list[str] = []
    for i, desired in enumerate(desireds):
        idx.append(i)
        for priv in _order_privileges(desired.table_privileges):
            widx.append(i)
            wcol.append(None)
            wpriv.append(priv)
        for column in sorted(desired.column_privileges):
            for priv in _order_privileges(desired.column_privileges[column]):
                widx.append(i)
                wcol.append(column)
                wpriv.append(priv)
    params: dict[str, list[Any]] = {
        "idx": idx,
        "role": [d.principal for d in desireds],
        "schema": [d.obj.schema for d in desireds],
        "name": [d.obj.name for d in desireds],
        "need_usage": [not d.empty for d in desireds],
        "widx": widx,
        "wcol": wcol,
        "wpriv": wpriv,
    }
    return params


def verify_differences(desireds: Sequence[Desired], rows: Sequence[Sequence[Any]]) -> list[list[str]]:
    """The differences per desired state, from the rows of :func:`verify_query`."""
    by_pair: list[list[tuple[str, str | None, str | None, str | None]]] = [[] for _ in desireds]
    for i, kind, col, priv, grantors in rows:
        by_pair[i].append((kind, col, priv, grantors))
    return [_differences(desired, found) for desired, found in zip(desireds, by_pair, strict=True)]


VERIFY_KEYS = ("idx", "role", "schema", "name", "need_usage", "widx", "wcol", "wpriv")
_VERIFY_PREPARED = Prepared.of(
    "gov_verify_v1",
    sql.SQL(
        "SELECT coalesce(json_agg(json_build_array(v.a, v.b, v.c, v.d, v.e)), '[]') FROM ({}) AS v(a, b, c, d, e)"
    ).format(sql.SQL(VERIFY_SQL)),
    VERIFY_KEYS,
)


def verify_check(conn: PgConnection, desireds: Sequence[Desired]) -> Check:
    """:func:`verify_many` as a :class:`Check`: one row, the rows of the verification as JSON."""
    query = _VERIFY_PREPARED.execute(conn, verify_params(desireds))
    return Check(query, lambda row: verify_differences(desireds, _json_rows(row)), _VERIFY_PREPARED)


def _json_rows(row: tuple[Any, ...] | None) -> list[list[Any]]:
    """The JSON array of rows a :class:`Check` query returns (psycopg2 decodes json already)."""
    return list(row[0]) if row and row[0] else []


def _differences(desired: Desired, rows: list[tuple[str, str | None, str | None, str | None]]) -> list[str]:
    who = display_name(desired.principal)
    kinds = {kind for kind, *_ in rows}
    if "no_table" in kinds or "no_role" in kinds:
        # Nothing can be held on a table or by a role that does not exist: fine when nothing is wanted.
        if desired.empty:
            return []
        out = []
        if "no_table" in kinds:
            out.append(f"table {desired.obj} does not exist")
        if "no_role" in kinds:
            out.append(f"role {who} does not exist")
        return out
    problems: list[tuple[int, str, int, str]] = []
    for kind, col, priv, grantors in rows:
        if kind == "no_usage":
            problems.append((0, "", -1, f"missing USAGE on schema {display_name(desired.obj.schema)} for {who}"))
            continue
        on = f" ({display_name(col)})" if col is not None else ""
        by = (
            f" (granted by {grantors}: the portal's role cannot revoke it; {grantors} or a superuser must)"
            if grantors
            else ""
        )
        problems.append(
            (
                1 if kind == "missing" else 2,
                col or "",
                _priv_rank(priv),
                f"{kind} {priv}{on} on {desired.obj} for {who}{by}",
            )
        )
    return [message for *_, message in sorted(problems)]


def verify_schema_usage(conn: PgConnection, principal: str, schema: str, present: bool) -> list[str]:
    """Whether ``principal`` holds USAGE on ``schema`` directly, as expected."""
    with _read(conn, "verify_schema_usage()") as cur:
        has = _guard_passes(cur, _usage_guard(principal, schema, present=True))
    if has == present:
        return []
    state = "missing" if present else "unexpected"
    return [f"{state} USAGE on schema {display_name(schema)} for {display_name(principal)}"]


def verify_membership(conn: PgConnection, member: str, group: str, present: bool) -> list[str]:
    """Whether ``member`` is (``present``) or is not a direct member of ``group`` (pg_auth_members)."""
    query = (
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m"
        " JOIN pg_catalog.pg_roles g ON g.oid = m.roleid JOIN pg_catalog.pg_roles r ON r.oid = m.member"
        " WHERE g.rolname = %(group)s AND r.rolname = %(member)s),"
        " EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %(member)s),"
        " EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %(group)s)"
    )
    with _read(conn, "verify_membership()") as cur:
        cur.execute(query, {"member": member, "group": group})
        is_member, member_exists, group_exists = cur.fetchone()
    if is_member == present:
        return []
    if present:
        out = [
            f"role {display_name(r)} does not exist"
            for r, ok in ((member, member_exists), (group, group_exists))
            if not ok
        ]
        return out or [f"missing membership of {display_name(member)} in {display_name(group)}"]
    return [f"unexpected membership of {display_name(member)} in {display_name(group)}"]


def verify_role(
    conn: PgConnection, name: str, present: bool, *, valid_until: datetime | None = None, login: bool | None = None
) -> list[str]:
    """Whether role ``name`` exists (``present``), and when it does, its expiry and LOGIN attribute."""
    query = "SELECT rolcanlogin, rolvaliduntil FROM pg_catalog.pg_roles WHERE rolname = %(name)s"
    with _read(conn, "verify_role()") as cur:
        cur.execute(query, {"name": name})
        row = cur.fetchone()
    who = display_name(name)
    if row is None:
        return [f"role {who} does not exist"] if present else []
    if not present:
        return [f"role {who} still exists"]
    out = []
    if login is not None and bool(row[0]) != login:
        out.append(f"role {who} {'cannot' if login else 'can'} log in")
    if valid_until is not None and row[1] != valid_until:
        out.append(f"role {who} is valid until {row[1]}, expected {valid_until.isoformat()}")
    return out


# ---------------------------------------------------------------------------------------------
# Observing (reconciler)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObservedState:
    """What the target holds for a set of roles, read from its catalog (direct privileges only).

    ``privileges[principal][object]`` are raw direct ACL entries (not normalised: a table SELECT
    and a column SELECT held together both show). ``memberships[member]`` are the groups the role is
    a direct member of; ``schema_usage[principal]`` the schemas it holds USAGE on directly.
    """

    existing: frozenset[str]
    privileges: Mapping[str, Mapping[ObjectRef, Privileges]]
    memberships: Mapping[str, frozenset[str]]
    schema_usage: Mapping[str, frozenset[str]]
    # Access package roles observed (every role with the package prefix given to observe()).
    packages: frozenset[str] = frozenset()

    def privileges_of(self, principal: str, obj: ObjectRef) -> Privileges:
        """Held DIRECTLY by ``principal`` on ``obj``."""
        return self.privileges.get(principal, {}).get(obj, Privileges())

    def packages_of(self, principal: str, obj: ObjectRef | None = None) -> list[str]:
        """The access packages ``principal`` is a direct member of (holding something on ``obj``)."""
        return sorted(
            g
            for g in self.memberships.get(principal, ())
            if g in self.packages and (obj is None or obj in self.privileges.get(g, {}))
        )

    def effective(self, principal: str) -> dict[ObjectRef, Privileges]:
        """What ``principal`` holds directly plus through its access packages, per object."""
        held = dict(self.privileges.get(principal, {}))
        for group in self.packages_of(principal):
            for obj, privs in self.privileges.get(group, {}).items():
                held[obj] = held[obj] | privs if obj in held else privs
        return held


_OBSERVE_SQL = """
WITH who AS (
    SELECT oid, rolname::text AS rolname FROM pg_catalog.pg_roles
    WHERE rolname = ANY(%(names)s::name[])
       OR (%(packages)s <> '' AND left(rolname::text, length(%(packages)s)) = %(packages)s)
)
SELECT 'R', who.rolname, NULL::text, NULL::text, NULL::text, NULL::text FROM who
UNION ALL
SELECT 'M', who.rolname, g.rolname::text, NULL, NULL, NULL
FROM who JOIN pg_catalog.pg_auth_members m ON m.member = who.oid JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
UNION ALL
SELECT 'S', who.rolname, n.nspname::text, NULL, NULL, a.privilege_type
FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a, who
WHERE n.nspacl IS NOT NULL AND a.grantee = who.oid AND a.privilege_type = 'USAGE'
UNION ALL
SELECT 'T', who.rolname, n.nspname::text, c.relname::text, NULL, a.privilege_type
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
     pg_catalog.aclexplode(c.relacl) a, who
WHERE c.relacl IS NOT NULL AND a.grantee = who.oid
UNION ALL
SELECT 'C', who.rolname, n.nspname::text, c.relname::text, att.attname::text, a.privilege_type
FROM pg_catalog.pg_attribute att JOIN pg_catalog.pg_class c ON c.oid = att.attrelid
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
     pg_catalog.aclexplode(att.attacl) a, who
WHERE att.attacl IS NOT NULL AND att.attnum > 0 AND NOT att.attisdropped AND a.grantee = who.oid
"""


def observe(
    conn: PgConnection, principals: Collection[str], *, packages: str = "", batch_size: int = 5_000
) -> ObservedState:
    """Direct table, column and schema privileges, memberships and existence of ``principals`` and,
    with ``packages`` (the package role prefix, e.g. ``gov_p_``), of every access package role.

    ONE catalog query (``aclexplode`` over pg_class, pg_attribute, pg_namespace, plus pg_auth_members
    and pg_roles), streamed through a server-side (named) cursor ``batch_size`` rows at a time, so
    memory holds the result being built and one batch, never the whole result twice.
    """
    names = sorted(set(principals))
    existing: set[str] = set()
    memberships: dict[str, set[str]] = {}
    usage: dict[str, set[str]] = {}
    # Keyed by plain tuples while streaming (cheap); ObjectRef values are made once per object.
    tables: dict[str, dict[tuple[str, str], set[str]]] = {}
    columns: dict[str, dict[tuple[str, str], dict[str, set[str]]]] = {}
    _require_idle(conn, "observe()")
    try:
        with conn.cursor(name=f"gov_observe_{secrets.token_hex(4)}") as cur:
            cur.itersize = batch_size
            cur.execute(_OBSERVE_SQL, {"names": names, "packages": packages})
            for kind, role, schema, rel, col, priv in cur:
                if kind == "T":
                    tables.setdefault(role, {}).setdefault((schema, rel), set()).add(priv)
                elif kind == "C":
                    columns.setdefault(role, {}).setdefault((schema, rel), {}).setdefault(col, set()).add(priv)
                elif kind == "R":
                    existing.add(role)
                elif kind == "M":
                    memberships.setdefault(role, set()).add(schema)
                else:
                    usage.setdefault(role, set()).add(schema)
    except psycopg2.Error as exc:
        _rollback_quietly(conn)
        raise classify_error(exc, statement="observe()") from exc
    _rollback_quietly(conn)
    refs: dict[tuple[str, str], ObjectRef] = {}
    privileges: dict[str, Mapping[ObjectRef, Privileges]] = {}
    for role in set(tables) | set(columns):
        role_tables = tables.get(role, {})
        role_columns = columns.get(role, {})
        held: dict[ObjectRef, Privileges] = {}
        for key in role_tables.keys() | role_columns.keys():
            ref = refs.get(key)
            if ref is None:
                ref = refs[key] = ObjectRef(*key)
            cols = role_columns.get(key)
            held[ref] = Privileges(
                frozenset(role_tables.get(key, ())), {c: frozenset(p) for c, p in cols.items()} if cols else {}
            )
        privileges[role] = MappingProxyType(held)
    return ObservedState(
        existing=frozenset(existing),
        privileges=MappingProxyType(privileges),
        memberships=MappingProxyType({m: frozenset(g) for m, g in memberships.items()}),
        schema_usage=MappingProxyType({p: frozenset(s) for p, s in usage.items()}),
        packages=frozenset(r for r in existing if packages and r.startswith(packages)),
    )


_CONNECT_POSTURE_SQL = """
SELECT coalesce(array_agg(datname::text ORDER BY datname)
                FILTER (WHERE pg_catalog.has_database_privilege('public', oid, 'CONNECT')), '{}'),
       pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CONNECT WITH GRANT OPTION'),
       pg_catalog.current_database()::text
FROM pg_catalog.pg_database WHERE datallowconn
"""


def connect_posture(conn: PgConnection) -> list[str]:
    """What stands between a role the portal manages and the cluster's other databases, as
    warnings for operators (empty: nothing). PUBLIC's CONNECT on a database lets every role of the
    cluster, each JIT login included, connect to it (docs/security.md has the DBA revoke it); and
    the portal's role needs CONNECT WITH GRANT OPTION on the governed database to let its roles in
    once PUBLIC's is gone. One catalog query."""
    with _read(conn, "the databases' CONNECT privileges") as cur:
        cur.execute(_CONNECT_POSTURE_SQL)
        public, may_grant, current = cur.fetchone()
    warnings = []
    if public:
        names = ", ".join(display_name(name) for name in public)
        warnings.append(
            f"PUBLIC may connect to database(s) {names}: every role of the cluster, the portal's JIT logins "
            "included, can log in there; revoke PUBLIC's CONNECT (docs/security.md)"
        )
    if not may_grant:
        warnings.append(
            f"the portal's role may not pass on CONNECT to database {display_name(current)} (it lacks the grant "
            "option): the roles it manages cannot log in once PUBLIC's CONNECT is revoked (docs/security.md)"
        )
    return warnings


# ---------------------------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------------------------


def connect(target: Target) -> PgConnection:
    """A new connection to ``target`` (autocommit off), with session-wide safety timeouts."""
    params: dict[str, Any] = {
        "dbname": target.dbname,
        "sslmode": target.sslmode,
        "connect_timeout": target.connect_timeout,
        "application_name": APPLICATION_NAME,
        # A target that vanishes from the network (no RST: a partition, a dead host) would leave a
        # query waiting on the socket for the kernel's retransmission timeout (~15 min); the
        # statement_timeout is enforced by the server and cannot help then. TCP keepalives and
        # tcp_user_timeout make libpq give up in about 15 s, as a lost connection.
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 15_000,
        "options": (
            f"-c statement_timeout={DEFAULT_STATEMENT_TIMEOUT_MS}"
            f" -c lock_timeout={DEFAULT_LOCK_TIMEOUT_MS}"
            f" -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
        ),
    }
    for key, value in (
        ("host", target.host),
        ("port", target.port),
        ("user", target.user),
        ("password", target.password),
        ("sslrootcert", target.sslrootcert),
    ):
        if value:
            params[key] = value
    try:
        conn = psycopg2.connect(**params)
    except psycopg2.Error as exc:
        raise classify_error(exc, secret_values=(target.password,), connecting_to=target.key) from None
    conn.autocommit = False
    return conn


def probe(target: Target) -> None:
    """Whether the target answers: a new connection (``target.connect_timeout``) and ``SELECT 1``,
    closed again; never a pooled connection, whose state says nothing about the server now.

    Raises the classified error when it does not answer (``unreachable``). An error the server
    answered with (wrong password, "too many connections", permission denied) returns normally:
    the server is there, and the jobs that run next report their own error.
    """
    try:
        conn = connect(target)
    except ProvisioningError as exc:
        if exc.unreachable:
            raise
        return
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    except psycopg2.Error as exc:
        error = classify_error(exc, secret_values=(target.password,))
        if error.unreachable:
            raise error from None
    finally:
        with suppress(psycopg2.Error):
            conn.close()


@dataclass
class _Idle:
    conn: PgConnection
    since: float
    secret_tag: bytes
    pid: int
    suspect: bool = False


class ConnectionPool:
    """Connections to targets, kept open and reused across jobs (a new one costs ~5 ms, as much as
    the whole grant). One per process (``POOL``), keyed by :attr:`Target.key`; thread-safe.

    Two ways to use it:

    * ``conn = POOL.get(target)``: the calling thread's own connection to ``target``, kept in the pool
      between jobs (a Celery prefork worker has one thread: one connection per target per process).
      After a connection error, ``POOL.discard(target)``; nothing to give back otherwise.
    * ``with POOL.connection(target) as conn:``: lend an idle connection for one job; returned
      afterwards, or closed when the job's error says the connection broke.

    Checks stay cheap: ``conn.closed`` always; a ``SELECT 1`` round trip only when the connection
    has been idle longer than ``check_idle_after_s`` or its last lent use ended in an error.
    Connections inherited across ``fork()`` are never used (nor closed: closing would end the parent's
    session). A changed password for the same key retires the old connections.
    """

    def __init__(self, *, max_idle_per_target: int = 4, check_idle_after_s: float = 30.0) -> None:
        self.max_idle_per_target = max_idle_per_target
        self.check_idle_after_s = check_idle_after_s
        self._idle: dict[str, list[_Idle]] = {}
        self._lock = threading.Lock()
        self._tag_key = secrets.token_bytes(32)
        self._inherited: list[PgConnection] = []
        # (thread ident, target key) -> the thread's own connection, for get().
        self._pinned: dict[tuple[int, str], _Idle] = {}
        self.opened = 0
        self.reused = 0

    def _secret_tag(self, target: Target) -> bytes:
        # An HMAC with a per-process random key: compares passwords without keeping them around.
        return hmac.new(self._tag_key, target.password.encode("utf-8"), hashlib.sha256).digest()

    def get(self, target: Target) -> PgConnection:
        """The calling thread's live connection to ``target`` (autocommit off, no open transaction),
        reused across jobs; a new one only when there is none or it is closed, stale or broken."""
        tag = self._secret_tag(target)
        slot = (threading.get_ident(), target.key)
        with self._lock:
            entry = self._pinned.pop(slot, None)
        if entry is not None:
            usable = entry.pid == os.getpid() and not entry.conn.closed and hmac.compare_digest(entry.secret_tag, tag)
            if usable and time.monotonic() - entry.since > self.check_idle_after_s:
                usable = self._healthy(entry.conn)
            if usable and entry.conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                usable = self._healthy(entry.conn)  # a previous job left a transaction open: roll it back
            if usable:
                entry.since = time.monotonic()
                with self._lock:
                    self._pinned[slot] = entry
                    self.reused += 1
                return entry.conn
            if entry.pid != os.getpid():
                self._inherited.append(entry.conn)
            else:
                self._close(entry.conn)
        conn = self.acquire(target)
        with self._lock:
            self._pinned[slot] = _Idle(conn, time.monotonic(), tag, os.getpid())
        return conn

    def acquire(self, target: Target) -> PgConnection:
        """Lend an idle connection to ``target`` (or a new one); give it back with :meth:`release`."""
        tag = self._secret_tag(target)
        while True:
            with self._lock:
                stack = self._idle.get(target.key)
                entry = stack.pop() if stack else None
            if entry is None:
                conn = connect(target)
                with self._lock:
                    self.opened += 1
                return conn
            if entry.pid != os.getpid():
                self._inherited.append(entry.conn)
                continue
            if entry.conn.closed or not hmac.compare_digest(entry.secret_tag, tag):
                self._close(entry.conn)
                continue
            stale = entry.suspect or time.monotonic() - entry.since > self.check_idle_after_s
            if stale and not self._healthy(entry.conn):
                self._close(entry.conn)
                continue
            with self._lock:
                self.reused += 1
            return entry.conn

    @staticmethod
    def _healthy(conn: PgConnection) -> bool:
        try:
            if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                conn.rollback()
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            conn.rollback()
            return True
        except psycopg2.Error:
            return False

    @staticmethod
    def _close(conn: PgConnection) -> None:
        with suppress(psycopg2.Error):
            conn.close()

    def release(self, target: Target, conn: PgConnection, *, suspect: bool = False) -> None:
        """Give ``conn`` back for reuse (an open transaction is rolled back first)."""
        if conn.closed:
            return
        if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            try:
                conn.rollback()
            except psycopg2.Error:
                self._close(conn)
                return
        entry = _Idle(conn, time.monotonic(), self._secret_tag(target), os.getpid(), suspect)
        with self._lock:
            stack = self._idle.setdefault(target.key, [])
            if len(stack) < self.max_idle_per_target:
                stack.append(entry)
                return
        self._close(conn)

    def discard(self, target: Target, conn: PgConnection | None = None) -> None:
        """Close ``conn`` (broken); when ``conn`` is None, the calling thread's :meth:`get`
        connection and every idle connection to ``target``."""
        if conn is not None:
            self._close(conn)
            return
        with self._lock:
            entries = self._idle.pop(target.key, [])
            pinned = self._pinned.pop((threading.get_ident(), target.key), None)
        if pinned is not None:
            entries.append(pinned)
        for entry in entries:
            if entry.pid == os.getpid():
                self._close(entry.conn)

    @contextmanager
    def connection(self, target: Target) -> Iterator[PgConnection]:
        """Lend a connection for one job: returned afterwards, or closed if it broke."""
        conn = self.acquire(target)
        try:
            yield conn
        except BaseException as exc:
            lost = conn.closed or isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError)
            lost = lost or (isinstance(exc, ProvisioningError) and exc.connection_lost)
            if lost:
                self.discard(target, conn)
            else:
                self.release(target, conn, suspect=True)
            raise
        self.release(target, conn)

    def close_all(self) -> None:
        """Close every idle and every :meth:`get` connection (worker shutdown, tests)."""
        with self._lock:
            entries = [e for stack in self._idle.values() for e in stack] + list(self._pinned.values())
            self._idle.clear()
            self._pinned.clear()
        for entry in entries:
            if entry.pid == os.getpid():
                self._close(entry.conn)


POOL = ConnectionPool()
