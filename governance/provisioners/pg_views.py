"""Governed views: column treatments (masked, pseudonymised, nulled) enforced by PostgreSQL itself.

A grant whose columns carry a treatment other than ``raw`` is not held on the base table: it is
held on a *governed view* of it, one per (table, column treatment set), in a schema the portal
manages (``portal_governed`` unless the source says otherwise). The view

* selects exactly the grant's columns, each raw or through its treatment's SQL expression;
* is ``WITH (security_barrier)``: a grantee's leaky function in a WHERE clause cannot see the rows
  before the view's own expressions ran;
* is owned by a dedicated NOLOGIN role of the source (``<prefix>v_owner``), which alone holds
  SELECT on the base table and on the pseudonym key table: PostgreSQL checks a view's tables as its
  owner, so the grantee reads through the view without holding anything on the base table;
* is the object of an access package (:mod:`governance.provisioners.pg_packages`): grantees become
  members of a package holding SELECT on the view, as they would on a table.

Pseudonyms are keyed HMAC-SHA256 computed in SQL with no extension: the portal keeps a 32-byte key
per source, and stores the two padded keys (``K xor ipad``, ``K xor opad``) in a one-row table of
the governed schema that only the view owner may read. The view computes
``sha256(opad || sha256(ipad || value))`` with the pads read by scalar subqueries, so the key is in
no view definition a grantee can read (``pg_get_viewdef``) and no function takes a grantee's input.
The key's statement is a secret Literal: plans, job records and errors show ``[REDACTED]``.

Verification: the view's comment records the digest of its specification and the md5 of its
definition as PostgreSQL normalised it (``pg_get_viewdef``) right after creation, in the same
transaction. A view whose definition, owner, options or comment differs (a hand edit such as
``CREATE OR REPLACE VIEW`` with the raw column) is re-created in the converge transaction; the
package's ACL on it is re-asserted after (the guards that read it are asked again). Knows no Django.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from .postgres import (
    NAMEDATALEN,
    ObjectRef,
    Statement,
    _check_identifier,
    _create_role_statement,
    _grant_usage_statement,
    _read,
    display_name,
    lock_name,
)

RAW, MASKED, PSEUDONYMISED, NULLED = "raw", "masked", "pseudonymised", "nulled"
TREATMENTS: tuple[str, ...] = (RAW, MASKED, PSEUDONYMISED, NULLED)
DEFAULT_SCHEMA = "portal_governed"
KEY_TABLE = "gov_pseudonym_key"
COMMENT_HEAD = "portal-governed view"
_FOLD = re.compile(r"[^a-z0-9_]")
_DIGEST_CHARS = 12
_DO_TAG = "$gov_view$"

# The type families a mask is chosen by (the column's format_type, as the catalog sync read it).
TEXT, DATE, TIMESTAMP, OTHER = "text", "date", "timestamp", "other"
_TEXT_TYPES = ("text", "character varying", "character", "varchar", "char", "citext", "name", "bpchar")


def type_family(data_type: str) -> str:
    """``text``, ``date``, ``timestamp`` or ``other`` for a column's type as PostgreSQL names it."""
    t = data_type.strip().lower()
    if t == "date":
        return DATE
    if t.startswith("timestamp"):
        return TIMESTAMP
    if any(t == name or t.startswith(name + "(") for name in _TEXT_TYPES):
        return TEXT
    return OTHER


# Which PII kinds have a partial mask, and on which type families. Any other (kind, family) with
# a text family is masked as the constant '***'; a non-text column of such a kind is not offered a
# mask (nulled is the type-safe way to hide it).
PARTIAL_MASKS: dict[str, tuple[str, ...]] = {
    "email": (TEXT,),
    "phone": (TEXT,),
    "card_number": (TEXT,),
    "person_name": (TEXT,),
    "date_of_birth": (DATE, TIMESTAMP, TEXT),
}


def mask_offered(tag: str, data_type: str) -> bool:
    """Whether ``masked`` can be applied to a column of PII kind ``tag`` and type ``data_type``
    without changing its type."""
    family = type_family(data_type)
    return family in PARTIAL_MASKS.get(tag, ()) or family == TEXT


@dataclass(frozen=True)
class ViewColumn:
    """One column of a governed view: its name, type family, treatment and PII kind (the mask)."""

    name: str
    family: str
    treatment: str = RAW
    tag: str = ""

    def __post_init__(self) -> None:
        _check_identifier(self.name, "column name")
        if self.treatment not in TREATMENTS:
            raise ValueError(f"unknown treatment {self.treatment!r} for column {self.name!r}")
        if self.treatment == MASKED and not (self.family in PARTIAL_MASKS.get(self.tag, ()) or self.family == TEXT):
            raise ValueError(f"column {self.name!r} cannot be masked without changing its type: choose nulled")


@dataclass(frozen=True)
class GovernedView:
    """A governed view of ``base``: its name, owner, columns, and the pseudonym pads (hex, secret)
    when a column is pseudonymised. Built by :func:`governed_view`."""

    base: ObjectRef
    view: ObjectRef
    owner: str
    columns: tuple[ViewColumn, ...]
    pads: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def key_table(self) -> ObjectRef:
        return ObjectRef(self.view.schema, KEY_TABLE)

    @property
    def pseudonymises(self) -> bool:
        return any(c.treatment == PSEUDONYMISED for c in self.columns)

    @property
    def spec(self) -> str:
        """The digest of everything the view's definition is made from (the key excepted)."""
        return _spec_digest(self.base, self.view.schema, self.owner, self.columns)

    @property
    def comment_head(self) -> str:
        return f"{COMMENT_HEAD} {self.spec} "


def _spec_digest(base: ObjectRef, schema: str, owner: str, columns: Sequence[ViewColumn]) -> str:
    payload = json.dumps(
        [base.schema, base.name, schema, owner, [[c.name, c.family, c.treatment, c.tag] for c in columns]],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def owner_role(role_prefix: str) -> str:
    """The NOLOGIN role that owns a source's governed views (``<prefix>v_owner``)."""
    name = f"{_FOLD.sub('_', role_prefix.lower())}v_owner"
    if len(name.encode()) > NAMEDATALEN:
        name = name[: NAMEDATALEN - 13] + "_" + hashlib.sha256(role_prefix.encode()).hexdigest()[:12]
    return name


def check_schema_name(schema: str) -> None:
    """ValueError unless ``schema`` can be a governed schema (the DO block's quoting tag excluded)."""
    _check_identifier(schema, "governed schema")
    if "$" in schema or schema.startswith("pg_"):
        raise ValueError("the governed schema must not contain '$' nor start with pg_")


def governed_view(
    base: ObjectRef,
    columns: Sequence[ViewColumn],
    *,
    schema: str,
    role_prefix: str,
    database: str,
    pads: tuple[str, str] | None = None,
) -> GovernedView:
    """The governed view of ``base`` with ``columns`` (in order): named ``<table>_<digest>`` in
    ``schema``, deterministic and at most 63 bytes; the digest covers the database, the table and
    the column treatments, so each distinct treatment set is its own view."""
    check_schema_name(schema)
    if not columns:
        raise ValueError("a governed view needs at least one column")
    cols = tuple(columns)
    owner = owner_role(role_prefix)
    digest = hashlib.sha256((database + "\0" + _spec_digest(base, schema, owner, cols)).encode("utf-8")).hexdigest()[
        :_DIGEST_CHARS
    ]
    room = NAMEDATALEN - _DIGEST_CHARS - 1
    readable = _FOLD.sub("_", base.name.lower())[:room].strip("_")
    name = f"{readable}_{digest}" if readable else f"v_{digest}"
    if any(c.treatment == PSEUDONYMISED for c in cols) and pads is None:
        raise ValueError("a pseudonymised column needs the source's pseudonym key")
    return GovernedView(base, ObjectRef(schema, name), owner, cols, pads)


def pseudonym_pads(key: bytes) -> tuple[str, str]:
    """HMAC-SHA256's two padded keys for ``key`` (RFC 2104), as hex: ``(K xor ipad, K xor opad)``."""
    if not 16 <= len(key) <= 64:
        raise ValueError("the pseudonym key must be 16 to 64 bytes")
    block = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in block).hex(), bytes(b ^ 0x5C for b in block).hex()


def pseudonym(key: bytes, value: str) -> str:
    """The token the view computes for ``value`` (its text form), for tests and support."""
    import hmac

    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------------------------
# SQL of the view
# ---------------------------------------------------------------------------------------------


def column_expression(col: ViewColumn, key_table: ObjectRef) -> sql.Composable:
    """The SELECT expression of one column (aliased to its own name). Same type as the column for
    raw, masked and nulled; pseudonyms are text (64 hex digits) whatever the type, so that the same
    value joins across tables."""
    c = sql.Identifier(col.name)
    if col.treatment == RAW:
        expr: sql.Composable = c
    elif col.treatment == NULLED:
        expr = sql.SQL("(CASE WHEN false THEN {} END)").format(c)  # NULL, of the column's own type
    elif col.treatment == PSEUDONYMISED:
        pad = sql.SQL("(SELECT gov_k.{} FROM {} gov_k)")
        expr = sql.SQL(
            "pg_catalog.encode(pg_catalog.sha256({} || pg_catalog.sha256({}"
            " || pg_catalog.convert_to({}::text, 'UTF8'))), 'hex')"
        ).format(
            pad.format(sql.Identifier("opad"), sql.Identifier(key_table.schema, key_table.name)),
            pad.format(sql.Identifier("ipad"), sql.Identifier(key_table.schema, key_table.name)),
            c,
        )
    else:
        expr = _mask(col, c)
    return sql.SQL("{} AS {}").format(expr, c)


def _mask(col: ViewColumn, c: sql.Identifier) -> sql.Composable:
    if col.tag == "email" and col.family == TEXT:
        # a***@example.com: the first character, the domain; '***' when there is no '@'.
        return sql.SQL(
            "(CASE WHEN {0} IS NULL THEN NULL WHEN pg_catalog.strpos({0}, '@') > 1"
            " THEN pg_catalog.left({0}, 1) || '***@' || pg_catalog.split_part({0}, '@', -1) ELSE '***' END)"
        ).format(c)
    if col.tag in ("phone", "card_number") and col.family == TEXT:
        # The last four digits, the rest one '***'.
        return sql.SQL(
            "(CASE WHEN {0} IS NULL THEN NULL ELSE '***'"
            " || pg_catalog.right(pg_catalog.regexp_replace({0}, '[^0-9]', '', 'g'), 4) END)"
        ).format(c)
    if col.tag == "person_name" and col.family == TEXT:
        return sql.SQL("pg_catalog.regexp_replace({}, '(\\S)\\S*', '\\1.', 'g')").format(c)  # Ada Lovelace -> A. L.
    if col.tag == "date_of_birth" and col.family == DATE:
        return sql.SQL("pg_catalog.date_trunc('year', {})::date").format(c)  # 1815-12-10 -> 1815-01-01
    if col.tag == "date_of_birth" and col.family == TIMESTAMP:
        return sql.SQL("pg_catalog.date_trunc('year', {})").format(c)
    if col.tag == "date_of_birth" and col.family == TEXT:
        return sql.SQL("pg_catalog.substring({}, '\\d{{4}}')").format(c)  # the year, as text
    return sql.SQL("(CASE WHEN {} IS NULL THEN NULL ELSE '***' END)").format(c)


def view_select(view: GovernedView) -> sql.Composable:
    return sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(column_expression(col, view.key_table) for col in view.columns),
        sql.Identifier(view.base.schema, view.base.name),
    )


def _regclass(obj: ObjectRef) -> sql.Composable:
    """``to_regclass`` of ``obj``: NULL, not an error, when it does not exist."""
    return sql.SQL("pg_catalog.to_regclass({})").format(sql.Literal(f"{_q(obj.schema)}.{_q(obj.name)}"))


def _role_oid(name: str) -> sql.Composable:
    """The oid of role ``name``, NULL (not an error) when it does not exist yet."""
    return sql.SQL("pg_catalog.to_regrole(pg_catalog.quote_ident({}))::oid").format(sql.Literal(name))


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def view_ok(view: GovernedView) -> sql.Composable:
    """True when the view exists as the portal would create it: owned by its owner, with
    security_barrier, and its definition (as PostgreSQL normalised it) the one recorded in its
    comment at creation, under the digest of its specification."""
    return sql.SQL(
        "coalesce((SELECT c.relkind = 'v' AND c.relowner = pg_catalog.to_regrole(pg_catalog.quote_ident({owner}))::oid"
        " AND 'security_barrier=true' = ANY(coalesce(c.reloptions, '{{}}'))"
        " AND pg_catalog.obj_description(c.oid, 'pg_class')"
        " = {head} || pg_catalog.md5(pg_catalog.pg_get_viewdef(c.oid))"
        " FROM pg_catalog.pg_class c WHERE c.oid = {rel}), false)"
    ).format(owner=sql.Literal(view.owner), head=sql.Literal(view.comment_head), rel=_regclass(view.view))


def _has_table_select(role: str, obj: ObjectRef) -> sql.Composable:
    return sql.SQL(
        "coalesce((SELECT pg_catalog.to_regrole(pg_catalog.quote_ident({})) IN (SELECT a.grantee FROM"
        " pg_catalog.aclexplode(c.relacl) a WHERE a.privilege_type = 'SELECT')"
        " FROM pg_catalog.pg_class c WHERE c.oid = {}), false)"
    ).format(sql.Literal(role), _regclass(obj))


def view_statements(view: GovernedView) -> list[Statement]:
    """What makes ``view`` exist exactly as specified, each step only when needed: the owner role
    (the portal's own role made a member, to create objects it owns), the governed schema, the
    owner's SELECT on the base table, the key table and its key, and the view itself (dropped and
    created again when it differs), with its comment."""
    owner, schema = view.owner, view.view.schema
    schema_id, owner_id = sql.Identifier(schema), sql.Identifier(owner)
    out: list[Statement] = [_create_role_statement(owner, login=False)]
    out.append(
        Statement.of(
            sql.SQL("GRANT {} TO CURRENT_USER").format(owner_id),
            guard=sql.SQL("SELECT NOT coalesce(pg_catalog.pg_has_role(current_user, {}, 'MEMBER'), false)").format(
                _role_oid(owner)
            ),
            condition=f"the portal's role is not a member of {display_name(owner)}",
        )
    )
    out.append(
        Statement.of(
            sql.SQL("CREATE SCHEMA {}").format(schema_id),
            guard=sql.SQL("SELECT pg_catalog.to_regnamespace({}) IS NULL").format(sql.Literal(_q(schema))),
            condition=f"schema {display_name(schema)} does not exist",
            tolerate=("42P06", "23505"),
            locks=(lock_name("schema", schema),),
        )
    )
    out.append(
        Statement.of(
            sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(schema_id, owner_id),
            guard=sql.SQL(
                "SELECT NOT coalesce(pg_catalog.has_schema_privilege({0}, {1}, 'USAGE')"
                " AND pg_catalog.has_schema_privilege({0}, {1}, 'CREATE'), false)"
            ).format(_role_oid(owner), sql.SQL("pg_catalog.to_regnamespace({})::oid").format(sql.Literal(_q(schema)))),
            condition=f"{display_name(owner)} lacks USAGE or CREATE on schema {display_name(schema)}",
            locks=(lock_name("schema", schema),),
        )
    )
    out.append(_grant_usage_statement(owner, view.base.schema))
    out.append(
        Statement.of(
            sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(
                sql.Identifier(view.base.schema, view.base.name), owner_id
            ),
            guard=sql.SQL("SELECT NOT {}").format(_has_table_select(owner, view.base)),
            condition=f"{display_name(owner)} lacks SELECT on {view.base}",
        )
    )
    if view.pseudonymises:
        out += _key_statements(view)
    out.append(_view_statement(view))
    return out


def _key_statements(view: GovernedView) -> list[Statement]:
    assert view.pads is not None
    key = sql.Identifier(view.key_table.schema, view.key_table.name)
    ipad, opad = view.pads
    create = Statement.of(
        sql.SQL(
            "CREATE TABLE {} (one boolean PRIMARY KEY DEFAULT true CHECK (one),"
            " ipad bytea NOT NULL, opad bytea NOT NULL);"
            " REVOKE ALL ON TABLE {} FROM PUBLIC"
        ).format(key, key),
        guard=sql.SQL("SELECT {} IS NULL").format(_regclass(view.key_table)),
        condition=f"the pseudonym key table {view.key_table} does not exist",
        tolerate=("42P07", "23505"),
        locks=(lock_name("table", view.key_table.schema, view.key_table.name),),
    )
    grant = Statement.of(
        sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(key, sql.Identifier(view.owner)),
        guard=sql.SQL("SELECT NOT {}").format(_has_table_select(view.owner, view.key_table)),
        condition=f"{display_name(view.owner)} lacks SELECT on {view.key_table}",
        locks=(lock_name("table", view.key_table.schema, view.key_table.name),),
    )
    # Unguarded (a guard would have to carry the key), but it writes only when the key differs.
    upsert = Statement.of(
        sql.SQL(
            "INSERT INTO {0} AS k (one, ipad, opad)"
            " VALUES (true, pg_catalog.decode({1}, 'hex'), pg_catalog.decode({2}, 'hex'))"
            " ON CONFLICT (one) DO UPDATE SET ipad = excluded.ipad, opad = excluded.opad"
            " WHERE (k.ipad, k.opad) IS DISTINCT FROM (excluded.ipad, excluded.opad)"
        ).format(key, sql.Literal(ipad), sql.Literal(opad)),
        guard=sql.SQL("SELECT true"),
        condition="always; it writes only when the stored key is not the source's",
        secret_values=(ipad, opad),
        writes=(),
    )
    return [create, grant, upsert]


def _view_statement(view: GovernedView) -> Statement:
    target = sql.Identifier(view.view.schema, view.view.name)
    body = sql.SQL(
        "BEGIN EXECUTE pg_catalog.format('COMMENT ON VIEW %s IS %L', {rel}::regclass,"
        " {head} || pg_catalog.md5(pg_catalog.pg_get_viewdef({rel}::regclass))); END"
    ).format(rel=sql.Literal(f"{_q(view.view.schema)}.{_q(view.view.name)}"), head=sql.Literal(view.comment_head))
    query = sql.SQL("; ").join(
        [
            sql.SQL("DROP VIEW IF EXISTS {}").format(target),
            sql.SQL("CREATE VIEW {} WITH (security_barrier) AS {}").format(target, view_select(view)),
            sql.SQL("ALTER VIEW {} OWNER TO {}").format(target, sql.Identifier(view.owner)),
            sql.SQL(_DO_TAG.join(["DO ", "{}", ""])).format(body),
        ]
    )
    # Declares no writes: it may drop the view and the packages' ACL on it, so every guard asked
    # ahead is asked again after it.
    return Statement.of(
        query,
        guard=sql.SQL("SELECT NOT {}").format(view_ok(view)),
        condition=f"the governed view {view.view} is missing or differs from its definition",
        locks=(lock_name("table", view.view.schema, view.view.name),),
    )


def drop_view_statement(view: ObjectRef, database: str | None = None) -> Statement:
    """Drop a governed view once no role but its owner holds anything on it (its last package left).

    It must run after the package drops, which end a plan with the database lock (their REVOKE
    CONNECT): it takes that lock too, so that :meth:`Plan.combine` keeps it after them."""
    locks = [lock_name("table", view.schema, view.name)]
    if database is not None:
        locks.append(lock_name("database", database))
    return Statement.of(
        sql.SQL("DROP VIEW {}").format(sql.Identifier(view.schema, view.name)),
        guard=sql.SQL(
            "SELECT coalesce((SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.aclexplode(c.relacl) a"
            " WHERE a.grantee <> c.relowner) FROM pg_catalog.pg_class c WHERE c.oid = {} AND c.relkind = 'v'), false)"
        ).format(_regclass(view)),
        condition=f"the governed view {view} exists and nobody holds anything on it",
        tolerate=("2BP01",),
        locks=tuple(locks),
    )


def verify_views(conn: PgConnection, views: Sequence[GovernedView]) -> list[list[str]]:
    """Per view, what differs from its definition (empty: verified), in one query."""
    if not views:
        return []
    parts = [
        sql.SQL("SELECT {}, {}, {} IS NOT NULL").format(sql.Literal(n), view_ok(v), _regclass(v.view))
        for n, v in enumerate(views)
    ]
    out: list[list[str]] = []
    with _read(conn, "verify governed views") as cur:
        cur.execute(sql.SQL("SELECT * FROM ({}) AS v ORDER BY 1").format(sql.SQL(" UNION ALL ").join(parts)))
        rows = cur.fetchall()
    for view, (_, ok, exists) in zip(views, rows, strict=True):
        if ok:
            out.append([])
        elif not exists:
            out.append([f"governed view {view.view} does not exist"])
        else:
            out.append(
                [
                    f"governed view {view.view} differs from its definition"
                    " (definition, owner, options or comment edited)"
                ]
            )
    return out


_VIEWS_ON_SQL = """
SELECT DISTINCT ON (b.idx, v.oid) b.idx, v.relname,
       ARRAY(SELECT r.rolname FROM pg_catalog.aclexplode(v.relacl) a
             JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
             WHERE a.grantee <> v.relowner ORDER BY 1)
FROM unnest(%(idx)s::int[], %(base)s::text[]) AS b(idx, base)
JOIN pg_catalog.pg_depend d ON d.refobjid = pg_catalog.to_regclass(b.base)
     AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.classid = 'pg_catalog.pg_rewrite'::regclass
JOIN pg_catalog.pg_rewrite w ON w.oid = d.objid
JOIN pg_catalog.pg_class v ON v.oid = w.ev_class AND v.relkind = 'v'
WHERE v.relnamespace = pg_catalog.to_regnamespace(%(schema)s)
  AND v.relowner = pg_catalog.to_regrole(pg_catalog.quote_ident(%(owner)s))
ORDER BY b.idx, v.oid
"""


def views_on(
    conn: PgConnection, bases: Sequence[ObjectRef], *, schema: str, owner: str
) -> list[dict[ObjectRef, list[str]]]:
    """Per base table, the governed views of ``schema`` owned by ``owner`` that read it, each with
    the roles other than its owner that hold a privilege on it (its packages), in one query: what a
    view left behind by a change of its table still holds."""
    if not bases:
        return []
    out: list[dict[ObjectRef, list[str]]] = [{} for _ in bases]
    with _read(conn, "find governed views of tables") as cur:
        cur.execute(
            _VIEWS_ON_SQL,
            {
                "idx": list(range(len(bases))),
                "base": [f"{_q(b.schema)}.{_q(b.name)}" for b in bases],
                "schema": _q(schema),
                "owner": owner,
            },
        )
        for idx, name, holders in cur.fetchall():
            out[idx][ObjectRef(schema, name)] = list(holders)
    return out
