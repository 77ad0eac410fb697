"""Run a dataset's checks and profile on its source (no Django here).

One run is ONE read-only REPEATABLE READ transaction (every check sees the same snapshot, and the
session is read-only twice over: ``default_transaction_read_only`` in the connection options and
``SET TRANSACTION READ ONLY``), with a time limit for the whole run: each statement gets what is left
of it as its ``statement_timeout``, so a run stops at its limit however many checks it has. Checks
after the limit are reported as errors ("stopped at the time limit"), never as passes.

A failing statement (a check whose constant does not fit the column's type, a pattern PostgreSQL
refuses, a dropped column) is rolled back to a savepoint; when the combined scan fails, each row
check is re-run on its own so that one bad check does not hide the others' answers.

Large tables are sampled (``TABLESAMPLE SYSTEM``) for the checks whose answer is a fraction of rows;
uniqueness and the checks with a shape of their own always read the whole table.

A run never commits: it ends with ROLLBACK, so even a function that PostgreSQL lets through a
read-only transaction (`lo_create`, on 15) leaves nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from . import integrity
from .checks import SAMPLEABLE, SCANNED, CheckSpec, Measurement, read_scan, read_single, scan_query, single_query
from .profile import ColumnProfile, ProfileColumn, profile_columns

STOPPED = "Stopped at the run's time limit ({} ms)."


@dataclass(frozen=True)
class Limits:
    time_limit_ms: int = 60_000
    sample_above_rows: int = 1_000_000  # estimated rows above which fraction checks are sampled
    sample_percent: float = 10.0
    top_values: int = 5
    top_values_max_distinct: int = 50


@dataclass(frozen=True)
class IntegritySpec:
    mode: str  # integrity.IMMUTABLE or integrity.APPEND_ONLY
    key: str = ""  # append-only: the column whose values only grow
    previous_watermark: str | None = None


@dataclass
class RunOutcome:
    measurements: list[Measurement] = field(default_factory=list)
    fingerprint: integrity.Fingerprint | None = None
    integrity_error: str = ""
    profiles: list[ColumnProfile] = field(default_factory=list)
    estimated_rows: int | None = None
    sample_percent: float | None = None
    error: str = ""  # the run as a whole failed (cannot connect, relation gone)
    duration_ms: float = 0.0


class _Clock:
    def __init__(self, limit_ms: int) -> None:
        self.limit_ms = limit_ms
        self.deadline = time.monotonic() + limit_ms / 1000

    def left_ms(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "pgerror", None) or str(exc) or type(exc).__name__
    first = str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__
    return first[:300]


class _Session:
    """Statements inside the run's transaction, each under a savepoint and the time left."""

    def __init__(self, conn: psycopg2.extensions.connection, clock: _Clock) -> None:
        self.conn, self.clock, self.stopped = conn, clock, False

    def fetch(self, query: sql.Composable, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        left = self.clock.left_ms()
        if self.stopped or left <= 0:
            self.stopped = True
            raise TimeoutError(STOPPED.format(self.clock.limit_ms))
        with self.conn.cursor() as cur:
            cur.execute("SAVEPOINT quality_check")
            cur.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(max(left, 1))))
            try:
                cur.execute(query, params or None)
                rows = cur.fetchall()
            except psycopg2.errors.QueryCanceled:
                cur.execute("ROLLBACK TO SAVEPOINT quality_check")
                self.stopped = True
                raise TimeoutError(STOPPED.format(self.clock.limit_ms)) from None
            except psycopg2.Error:
                cur.execute("ROLLBACK TO SAVEPOINT quality_check")
                raise
            cur.execute("RELEASE SAVEPOINT quality_check")
            return rows


def _estimate(session: _Session, schema: str, table: str) -> int | None:
    rows = session.fetch(
        sql.SQL(
            "SELECT c.reltuples::bigint FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
        ),
        (schema, table),
    )
    if not rows:
        raise LookupError(f"The relation {schema}.{table} does not exist on the source.")
    value = int(rows[0][0])
    return value if value >= 0 else None  # -1: never analysed


def _scan(
    session: _Session, schema: str, table: str, specs: list[CheckSpec], sample: float | None
) -> list[Measurement]:
    if not specs:
        return []
    try:
        return read_scan(specs, session.fetch(scan_query(schema, table, specs, sample))[0])
    except TimeoutError as exc:
        return [Measurement(s.key, error=str(exc)) for s in specs]
    except psycopg2.Error as exc:
        if len(specs) == 1:
            return [Measurement(specs[0].key, error=_one_line(exc))]
    # One of them is broken: measure each alone, so the others still get an answer.
    out: list[Measurement] = []
    for spec in specs:
        out.extend(_scan(session, schema, table, [spec], sample))
    return out


def run(
    params: dict[str, Any],
    *,
    schema: str,
    table: str,
    checks: Sequence[CheckSpec],
    profile: Sequence[ProfileColumn] = (),
    watch: IntegritySpec | None = None,
    limits: Limits = Limits(),
) -> RunOutcome:
    """Measure `checks` (and profile `profile`) on ``schema.table``; never raises for the data's sake."""
    started = time.monotonic()
    outcome = RunOutcome()
    clock = _Clock(limits.time_limit_ms)
    try:
        conn = psycopg2.connect(**params)
    except psycopg2.Error as exc:
        outcome.error = f"Could not connect to the source: {_one_line(exc)}"
        return outcome
    try:
        conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
        session = _Session(conn, clock)
        try:
            outcome.estimated_rows = _estimate(session, schema, table)
        except (LookupError, TimeoutError, psycopg2.Error) as exc:
            outcome.error = str(exc) if isinstance(exc, (LookupError, TimeoutError)) else _one_line(exc)
            return outcome
        big = outcome.estimated_rows is not None and outcome.estimated_rows > limits.sample_above_rows
        sample = limits.sample_percent if big else None
        outcome.sample_percent = sample
        sampled = [c for c in checks if c.kind in SAMPLEABLE]
        whole = [c for c in checks if c.kind in SCANNED and c.kind not in SAMPLEABLE]
        results = {m.key: m for m in _scan(session, schema, table, sampled, sample)}
        results.update({m.key: m for m in _scan(session, schema, table, whole, None)})
        for spec in checks:
            if spec.kind in SCANNED:
                continue
            try:
                rows = session.fetch(single_query(schema, table, spec))
                results[spec.key] = read_single(spec, rows[0] if rows else None)
            except TimeoutError as exc:
                results[spec.key] = Measurement(spec.key, error=str(exc))
            except psycopg2.Error as exc:
                results[spec.key] = Measurement(spec.key, error=_one_line(exc))
        outcome.measurements = [results[c.key] for c in checks]
        if watch is not None:
            try:
                query = integrity.query(schema, table, watch.mode, watch.key, watch.previous_watermark)
                outcome.fingerprint = integrity.read(watch.mode, session.fetch(query)[0])
            except TimeoutError as exc:
                outcome.integrity_error = str(exc)
            except psycopg2.Error as exc:
                outcome.integrity_error = _one_line(exc)
        if profile:
            try:
                outcome.profiles = profile_columns(session.fetch, schema, table, profile, sample, limits)
            except TimeoutError as exc:
                outcome.error = str(exc)
            except psycopg2.Error as exc:
                outcome.error = f"The profile failed: {_one_line(exc)}"
        conn.rollback()  # read-only: nothing to commit, and nothing is
    finally:
        conn.close()
        outcome.duration_ms = (time.monotonic() - started) * 1000
    return outcome
