"""Integrity fingerprints of tables that must not change behind anyone's back (no Django here).

A fingerprint is the row count and an order-independent checksum computed IN the database: the sum,
as numeric, of the first 64 bits of each row's md5 (``t::text``, the row's text form). Changing any
value of any row changes that row's hash and so the sum (a collision needs two changes whose hash
differences cancel exactly: about 2^-64); the sum does not depend on the order rows are read in, and
no value of the data leaves the database.

- **immutable**: the whole table's fingerprint must stay as it was.
- **append-only**, with a key that only grows (an id, an insertion time): the rows up to the last
  snapshot's highest key (the *watermark*) must keep their fingerprint; rows above it are new. One
  scan measures both. The watermark travels as text and comes back as an untyped literal, which
  PostgreSQL reads as the key column's type.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg2 import sql

IMMUTABLE = "immutable"
APPEND_ONLY = "append_only"


@dataclass(frozen=True)
class Fingerprint:
    rows: int
    checksum: str  # the numeric sum as text
    watermark: str | None = None  # append-only: the highest key, as text
    rows_below: int | None = None  # append-only: rows up to the previous watermark
    checksum_below: str | None = None


def _hash(alias: str) -> sql.Composable:
    return sql.SQL("('x' || substr(md5({}::text), 1, 16))::bit(64)::bigint::numeric").format(sql.Identifier(alias))


def query(schema: str, table: str, mode: str, key: str = "", previous_watermark: str | None = None) -> sql.Composed:
    h = _hash("t")
    relation = sql.Identifier(schema, table)
    if mode == IMMUTABLE:
        return sql.SQL("SELECT count(*), coalesce(sum({h}), 0)::text FROM {rel} t").format(h=h, rel=relation)
    col = sql.SQL("t.{}").format(sql.Identifier(key))
    below = (
        sql.SQL("{} <= {}").format(col, sql.Literal(previous_watermark))
        if previous_watermark is not None
        else sql.SQL("false")
    )
    return sql.SQL(
        "SELECT count(*), coalesce(sum({h}), 0)::text, max({col})::text,"
        " count(*) FILTER (WHERE {below}), coalesce(sum({h}) FILTER (WHERE {below}), 0)::text FROM {rel} t"
    ).format(h=h, col=col, below=below, rel=relation)


def read(mode: str, row: tuple[object, ...]) -> Fingerprint:
    if mode == IMMUTABLE:
        return Fingerprint(rows=int(str(row[0])), checksum=str(row[1]))
    return Fingerprint(
        rows=int(str(row[0])),
        checksum=str(row[1]),
        watermark=None if row[2] is None else str(row[2]),
        rows_below=int(str(row[3])),
        checksum_below=str(row[4]),
    )


def compare(mode: str, before: Fingerprint | None, now: Fingerprint) -> list[str]:
    """What changed that should not have (empty: nothing), in words without values."""
    if before is None:
        return []
    if mode == IMMUTABLE:
        problems = []
        if now.rows != before.rows:
            problems.append(f"the row count changed from {before.rows} to {now.rows}")
        if now.checksum != before.checksum:
            problems.append(
                "the rows' checksum changed" + ("" if now.rows != before.rows else " (a value was modified)")
            )
        return problems
    problems = []
    if now.rows_below is not None and now.rows_below != before.rows:
        problems.append(f"rows up to the last snapshot's highest key went from {before.rows} to {now.rows_below}")
    if now.checksum_below is not None and now.checksum_below != before.checksum:
        problems.append("rows up to the last snapshot's highest key were modified (their checksum changed)")
    return problems
