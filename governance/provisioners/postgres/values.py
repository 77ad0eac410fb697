"""Constants and value types of the PostgreSQL adapter: targets, objects, privileges, packages, desired states."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from psycopg2.extensions import connection as PgConnection

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
    # The user is a login leased from Vault: as secret as its password, never in a message.
    leased: bool = False

    @property
    def key(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}?sslmode={self.sslmode}"

    @property
    def secret_values(self) -> tuple[str, ...]:
        """What an error message must not show: the password, and a leased login's name."""
        return (self.password, self.user) if self.leased else (self.password,)

    def __str__(self) -> str:
        if self.leased:
            return f"(a login leased from Vault)@{self.host}:{self.port}/{self.dbname}?sslmode={self.sslmode}"
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
    * aggregate = nothing: the portal answers differentially private aggregates itself, so the
      grantee holds no privilege on the target (the portal's models also keep such grants away
      from the engine and the reconcilers; this is the adapter's own guarantee).
    """
    cols = sorted(set(columns or ()))  # None or () = the whole table
    for column in cols:
        _check_identifier(column, "column name")
    level = str(level).lower()
    if level == "aggregate":
        return Privileges(frozenset())
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
class RowSecurity:
    """How an object under row filters is guarded: ``force`` binds the table's owner too;
    ``confirmed`` are readers the portal does not manage whom the owner accepted to lose rows;
    ``packages`` is the name prefix of the source's package roles (they get pass-through policies)."""

    force: bool = False
    confirmed: tuple[str, ...] = ()
    packages: str = ""


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
    # A governed view (governance.provisioners.pg_views.GovernedView) when ``obj`` is one: the plan
    # makes the view exist as specified before the package's privileges on it.
    view: Hashable | None = None
    # Row filters (governance.provisioners.pg_row_filters): the bound predicate of a filtered
    # package, and how the object is guarded when it is under row filters (None: it is not).
    row_filter: tuple[Any, ...] | None = None
    rls: RowSecurity | None = None

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
    # The object a stale package holds its privileges on when it is not ``obj`` (a governed view).
    stale_on: Mapping[str, ObjectRef] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        _check_role_name(self.principal, "principal")
        norm = Privileges(self.table_privileges, self.column_privileges).normalized()
        object.__setattr__(self, "table_privileges", norm.table)
        object.__setattr__(self, "column_privileges", norm.columns)
        for name in self.stale:
            _check_role_name(name, "package role")
        if self.packages and not self.packaged:
            raise ValueError("packages are given for a desired state that is not packaged")
        if any(p.obj != self.obj and getattr(p.view, "base", None) != self.obj for p in self.packages):
            raise ValueError("a package of another object")

    @classmethod
    def through(
        cls,
        principal: str,
        obj: ObjectRef,
        packages: Collection[Package],
        stale: Collection[str] = (),
        stale_on: Mapping[str, ObjectRef] | None = None,
    ) -> Desired:
        """``principal`` holds the union of ``packages`` through membership; ``stale`` it leaves
        (``stale_on``: the governed view a stale package is held on, when not ``obj``)."""
        ordered = tuple(sorted({p.name: p for p in packages}.values(), key=lambda p: p.name))
        keep = {p.name for p in ordered}
        total = Privileges()
        for package in ordered:
            if package.obj == obj:  # privileges on a governed view are not privileges on obj
                total = total | package.privileges
        leave = tuple(sorted(set(stale) - keep))
        on = {n: o for n, o in (stale_on or {}).items() if n in leave}
        return cls(principal, obj, total.table, total.columns, ordered, leave, packaged=True, stale_on=on)

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
