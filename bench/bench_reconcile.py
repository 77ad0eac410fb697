"""Reconcile of a source with 10,000 tables and 100,000 grants: wall time against the catalog read.

Issue 15: "reconcile of 100,000 grants over 10,000 tables in <= 1 s, memory bounded and reported".
The target holds 10,000 tables (4 schemas of 2,500), each with its access package (a NOLOGIN role
holding SELECT on it), and 10 portal-managed roles, members of every package; the portal holds the
matching 100,000 active read grants, so a run finds no drift. Measured:
`reconcile_source(fix=False)` wall time over 5 runs (median, max), its portal query count and peak
Python memory (tracemalloc, in a separate instrumented run: tracing slows Python down), and where
the time goes (portal read, target observe, diff, record). Floor, in the same run: the raw catalog
read (`aclexplode` over pg_class/pg_attribute/pg_namespace plus pg_auth_members for those roles and
the packages, the adapter's own query, fetched whole by bare psycopg2). Then 10 out-of-band
`GRANT UPDATE`s and one `fix=True` run.

Run with `make bench` (BENCH_RECONCILE_TABLES_PER_SCHEMA x 4 schemas, BENCH_RECONCILE_PRINCIPALS
change the size, e.g. 250 and 10 for the 1,000 tables / 10,000 grants of earlier issues); prints
one line per measurement and writes bench/results/reconcile.json.
"""

from __future__ import annotations

import cProfile
import datetime as dt
import functools
import gc
import io
import json
import os
import pstats
import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from psycopg2 import sql

from accounts.models import User
from bench.sizes import size
from bench.workload import analyze, drop_roles
from governance.models import AccessLevel, Dataset, DataSource, Grant, GrantStatus, SourcePrincipal
from governance.provisioners import pg_packages as pgp
from governance.provisioners import postgres as pg
from governance.provisioning import managed_role_name
from governance.services import reconcile
from governance.services.reconcile import ReconcileResult, reconcile_source
from tests import tls_target
from tests.provisioning.conftest import admin_connection

SCHEMAS = 4
TABLES_PER_SCHEMA = size(2_500, 10, "BENCH_RECONCILE_TABLES_PER_SCHEMA")
PRINCIPALS = size(10, 3, "BENCH_RECONCILE_PRINCIPALS")
RUNS = size(5, 1)
FLOOR_RUNS = size(11, 2)
DRIFTS = min(size(10, 3), PRINCIPALS)  # one out-of-band grant per principal
TARGET_MS = 1_000.0
RESULTS = Path(__file__).resolve().parent / "results"
# Stages of reconcile_source() timed for the breakdown (private helpers: skipped if renamed).
# `_observe` runs once for the packages and once per chunk of principals; `_wanted` is the stream of
# each principal's packages from the portal (timed while it is iterated).
STAGES = ("_read_portal", "_wanted", "_observe", "_diff_packages", "_diff_principals", "_record")
# BENCH_PROFILE=1 also prints the top functions of one run by cumulative time (cProfile;
# BENCH_PROFILE_SORT=tottime sorts by own time).
PROFILE = os.environ.get("BENCH_PROFILE", "") not in ("", "0")

pytestmark = pytest.mark.django_db(transaction=True)


def schema_names() -> list[str]:
    return [f"bench_rc_{i}" for i in range(SCHEMAS)]


def table_names() -> list[tuple[str, str]]:
    return [(schema, f"t{j:04d}") for schema in schema_names() for j in range(TABLES_PER_SCHEMA)]


# Tables made (and dropped) per target transaction: each holds a lock on the table, its TOAST table
# and their indexes until commit, and the target's lock table has room for ~12,800 (64 per
# connection): 10,000 tables in one transaction would run out of shared memory.
TABLES_PER_TRANSACTION = 500


def package_names(source: DataSource) -> list[str]:
    """The access package of each table for a read grant, named as the engine names it."""
    read = pg.privileges_for_level(AccessLevel.READ).normalized()
    return [
        pgp.package_name(source.role_prefix, source.database, pg.ObjectRef(schema, name), read)
        for schema, name in table_names()
    ]


@pytest.fixture
def wide_target(target_source: DataSource) -> Iterator[list[str]]:
    """The tables, each with its access package (a NOLOGIN role holding USAGE on the schema and
    SELECT on the table), and the managed roles, members of every package; dropped afterwards so
    later benchmarks sync the usual small target. As in production, the portal's least-privileged
    role holds the tables WITH GRANT OPTION (docs/security.md) and grants what the packages hold and
    the memberships: what it granted, it can revoke. Yields the principals' role names (the run's
    role prefix: the session teardown would drop them anyway)."""
    roles = [managed_role_name(target_source, "u", f"rc_reader{i}") for i in range(PRINCIPALS)]
    packages = package_names(target_source)
    portal = sql.Identifier(tls_target.PORTAL_ROLE)
    conn = admin_connection(target_source.database)
    conn.autocommit = False
    try:
        with conn.cursor() as cur:
            for role in roles:
                cur.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
            principals = sql.SQL(", ").join(sql.Identifier(role) for role in roles)
            for schema in schema_names():
                cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
                tls_target.grant_schema(cur, schema, tls_target.PORTAL_ROLE)  # tables made later included
            conn.commit()
            made = list(zip(table_names(), packages, strict=True))
            for first in range(0, len(made), TABLES_PER_TRANSACTION):
                chunk = made[first : first + TABLES_PER_TRANSACTION]
                for (schema, name), package in chunk:
                    table, pkg = sql.Identifier(schema, name), sql.Identifier(package)
                    cur.execute(
                        sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, amount numeric, note text)").format(table)
                    )
                    cur.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(pkg))
                    cur.execute(sql.SQL("SET ROLE {}").format(portal))
                    cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), pkg))
                    cur.execute(sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(table, pkg))
                    cur.execute("RESET ROLE")
                cur.execute(sql.SQL("SET ROLE {}").format(portal))
                cur.execute(
                    sql.SQL("GRANT {} TO {}").format(
                        sql.SQL(", ").join(sql.Identifier(package) for _, package in chunk), principals
                    )
                )
                cur.execute("RESET ROLE")
                conn.commit()
        yield roles
    finally:
        conn.rollback()
        conn.autocommit = True
        pg.POOL.close_all()  # no pooled session of this process keeps the schemas busy
        with conn.cursor() as cur:
            for schema in schema_names():
                names = [table for table in table_names() if table[0] == schema]
                for first in range(0, len(names), TABLES_PER_TRANSACTION):
                    doomed = names[first : first + TABLES_PER_TRANSACTION]
                    tables = sql.SQL(", ").join(sql.Identifier(*table) for table in doomed)
                    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(tables))
                cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        drop_roles(conn, roles + packages)
        conn.close()


def arrange_portal(source: DataSource, roles: list[str]) -> None:
    """Datasets for the tables, a user mapped to each role, an active read grant per (user, table)."""
    classification = source.default_classification
    assert classification is not None
    Dataset.objects.bulk_create(
        [
            Dataset(
                source=source,
                schema=schema,
                name=name,
                classification=classification,
                declared_classification=classification,
            )
            for schema, name in table_names()
        ]
    )
    datasets = list(Dataset.objects.filter(source=source, schema__in=schema_names()).values_list("pk", flat=True))
    assert len(datasets) == SCHEMAS * TABLES_PER_SCHEMA
    users = [User.objects.create_user(f"rc_reader{i}", password="x" * 16) for i in range(PRINCIPALS)]
    SourcePrincipal.objects.bulk_create(
        [
            SourcePrincipal(source=source, user=user, db_role=role, managed=True)
            for user, role in zip(users, roles, strict=True)
        ]
    )
    now = timezone.now()
    Grant.objects.bulk_create(
        [
            Grant(
                grantee_user=user,
                dataset_id=ds,
                level=AccessLevel.READ,
                status=GrantStatus.ACTIVE,
                starts_at=now - dt.timedelta(days=1),
                ends_at=now + dt.timedelta(days=30),
                verified_at=now,
                reason="bench",
            )
            for user in users
            for ds in datasets
        ],
        batch_size=2_000,
    )
    analyze(Dataset, User, SourcePrincipal, Grant)


def catalog_read_ms(conn: Any, roles: list[str], prefix: str) -> tuple[float, int]:
    """The floor: the adapter's catalog query as reconcile issues it, once for the ACLs and owned
    objects of every role of the source (packages and principals), once for the principals'
    memberships (all of them at once, where reconcile reads them in chunks), fetched whole, nothing built.

    With Python's cyclic GC paused: a full collection of this test process's heap, set off by the
    catalog rows' allocations, would otherwise add tens of milliseconds to some samples."""
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        rows = 0
        with conn.cursor() as cur:
            for params in (
                {"names": sorted(roles), "prefix": prefix, "acls": True, "members": False},
                {"names": sorted(roles), "prefix": "", "acls": False, "members": True},
            ):
                cur.execute(pg._OBSERVE_SQL, params)
                rows += len(cur.fetchall())
        conn.rollback()
        return (time.perf_counter() - started) * 1000, rows
    finally:
        gc.enable()


def observe_ms(conn: Any, roles: list[str], packages: str, prefix: str) -> float:
    started = time.perf_counter()
    pg.observe(conn, roles, packages=packages, prefix=prefix, memberships=False)
    pg.observe(conn, roles, acls=False)
    return (time.perf_counter() - started) * 1000


class StageTimer:
    """Wraps reconcile's private stages to add up their wall time per run (breakdown only)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ms: dict[str, float] = {}
        for name in STAGES:
            # Each stage is patched where reconcile_source looks it up; `_owners` is called by
            # `_observe` in the target module.
            real = getattr(reconcile, name, None)
            if callable(real):
                monkeypatch.setattr(reconcile, name, self._wrap(name, real))

    def _wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(real)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                out = real(*args, **kwargs)
            finally:
                self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - started) * 1000
            return self._iterated(name, out) if isinstance(out, Iterator) else out

        return timed

    def _iterated(self, name: str, items: Iterator[Any]) -> Iterator[Any]:
        """A generator's time is spent while it is iterated: add up each step."""
        while True:
            started = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - started) * 1000
            yield item


def explain(statement: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of a captured portal query (a server-side cursor's DECLARE
    unwrapped); its parameters are already inlined by Django's capture."""
    query = statement.split(" FOR ", 1)[1] if statement.startswith("DECLARE ") else statement
    with connection.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + query)
        return "\n".join(row[0] for row in cur.fetchall())


def timed_reconcile(source: DataSource, *, fix: bool = False) -> tuple[float, ReconcileResult]:
    started = time.perf_counter()
    result = reconcile_source(source=source, fix=fix)
    return (time.perf_counter() - started) * 1000, result


def test_reconcile_wide_source(
    target_source: DataSource, wide_target: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    roles = wide_target
    arrange_portal(target_source, roles)
    grants = Grant.objects.filter(dataset__source=target_source).count()
    assert grants == PRINCIPALS * SCHEMAS * TABLES_PER_SCHEMA

    # Warm-up: the pooled target connection, Django's first queries, the catalog pages in cache.
    _, first = timed_reconcile(target_source)
    assert first.clean and not first.drift, first.lines()[:5]
    assert first.principals == PRINCIPALS  # the people compared (their access packages are not counted)

    runs: list[float] = []
    for _ in range(RUNS):
        ms, result = timed_reconcile(target_source)
        assert result.clean and not result.drift, result.lines()[:5]  # sanity: target matches portal
        runs.append(ms)

    # Diagnostic: the same runs with Python's cyclic GC paused (how much of the time is collection).
    no_gc_runs: list[float] = []
    for _ in range(RUNS):
        gc.collect()
        gc.disable()
        try:
            no_gc_runs.append(timed_reconcile(target_source)[0])
        finally:
            gc.enable()

    # Floors on a bare psycopg2 connection, interleaved with nothing else.
    floor_conn = admin_connection(target_source.database)
    packages = pgp.package_prefix(target_source.role_prefix)
    floor_conn.autocommit = False
    floor_runs, rows = [], 0
    observe_runs = []
    for _ in range(FLOOR_RUNS + 1):
        ms, rows = catalog_read_ms(floor_conn, roles, target_source.role_prefix)
        floor_runs.append(ms)
        observe_runs.append(observe_ms(floor_conn, roles, packages, target_source.role_prefix))
    floor_conn.close()
    floor_runs, observe_runs = floor_runs[1:], observe_runs[1:]  # the first one warms the connection

    # One instrumented run: portal queries, peak Python memory, and time per stage.
    stages = StageTimer(monkeypatch)
    tracemalloc.start()
    try:
        with CaptureQueriesContext(connection) as portal:
            traced_ms, traced = timed_reconcile(target_source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert traced.clean
    monkeypatch.undo()
    queries = len(portal.captured_queries)
    slowest = sorted(portal.captured_queries, key=lambda q: -float(q["time"]))[:3]
    peak_mb = peak / 1024 / 1024
    breakdown = {name.lstrip("_"): round(ms, 1) for name, ms in stages.ms.items()}

    # A second breakdown without tracemalloc (its tracing inflates the Python-heavy stages).
    plain_stages = StageTimer(monkeypatch)
    plain_ms, _ = timed_reconcile(target_source)
    monkeypatch.undo()
    plain_breakdown = {name.lstrip("_"): round(ms, 1) for name, ms in plain_stages.ms.items()}

    if PROFILE:
        profiler = cProfile.Profile()
        profiler.runcall(reconcile_source, source=target_source)
        out = io.StringIO()
        order = os.environ.get("BENCH_PROFILE_SORT", "cumulative")
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(30)
        print(out.getvalue())
        for q in slowest[:2]:  # PostgreSQL's own account of the slowest portal queries
            print(explain(q["sql"]))

    median = statistics.median(runs)
    floor = statistics.median(floor_runs)
    print(
        f"\nreconcile {SCHEMAS * TABLES_PER_SCHEMA:,} tables / {grants:,} grants: median {median:.0f} ms "
        f"(target ≤ {TARGET_MS:.0f} ms), "
        f"max {max(runs):.0f} ms, floor (catalog read) {floor:.1f} ms, ratio {median / floor:.1f}, "
        f"queries {queries}, peak MB {peak_mb:.1f}"
    )
    print(
        f"  observe() alone {statistics.median(observe_runs):.1f} ms ({rows} catalog rows); "
        f"with the cyclic GC paused: median {statistics.median(no_gc_runs):.0f} ms; "
        f"stages of one run ({plain_ms:.0f} ms): {plain_breakdown}"
    )
    for q in slowest:  # of the traced run: the portal's own queries, fetch included
        print(f"  slowest portal query {float(q['time']) * 1000:7.1f} ms  {q['sql'][:110]}")

    # Drift: 10 out-of-band GRANT UPDATEs (one per table, principal i on table i), made with the
    # portal's own login (what the table owner grants, the portal's role cannot revoke: that case is
    # reported, not repaired, see docs/security.md), then fix=True once.
    drifted = table_names()[:: len(table_names()) // DRIFTS][:DRIFTS]
    conn = admin_connection(target_source.database)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(tls_target.PORTAL_ROLE)))
        for role, (schema, name) in zip(roles, drifted, strict=True):
            cur.execute(
                sql.SQL("GRANT UPDATE ON {}.{} TO {}").format(
                    sql.Identifier(schema), sql.Identifier(name), sql.Identifier(role)
                )
            )
    conn.close()
    with CaptureQueriesContext(connection) as fix_portal:
        fix_ms, fixed = timed_reconcile(target_source, fix=True)
    assert fixed.counts["unexpected"] == DRIFTS and fixed.fixed == DRIFTS and not fixed.errors, fixed.summary()
    assert fixed.clean
    after_ms, after = timed_reconcile(target_source)
    assert after.clean and not after.drift, after.lines()
    print(
        f"reconcile --fix with {DRIFTS} drifts (out-of-band GRANT UPDATE): {fix_ms:.0f} ms, "
        f"{len(fix_portal.captured_queries)} portal queries; {fixed.summary()}; next run {after_ms:.0f} ms, clean"
    )

    report = {
        "tables": SCHEMAS * TABLES_PER_SCHEMA,
        "grants": grants,
        "principals": PRINCIPALS,
        "reconcile_ms": {"median": median, "max": max(runs), "runs": runs},
        "target_ms": TARGET_MS,
        "floor_catalog_read_ms": {"median": floor, "runs": floor_runs, "rows": rows},
        "observe_ms": {"median": statistics.median(observe_runs), "runs": observe_runs},
        "ratio_vs_floor": median / floor,
        "reconcile_gc_paused_ms": {"median": statistics.median(no_gc_runs), "runs": no_gc_runs},
        "portal_queries": queries,
        "peak_python_mb": peak_mb,
        "traced_run_ms": traced_ms,
        "stages_ms": plain_breakdown,
        "stages_ms_traced": breakdown,
        "fix": {
            "drifts": DRIFTS,
            "ms": fix_ms,
            "portal_queries": len(fix_portal.captured_queries),
            "fixed": fixed.fixed,
            "next_run_ms": after_ms,
        },
        "cpu_count": os.cpu_count(),
        "libpq_version": psycopg2.__libpq_version__,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reconcile.json").write_text(json.dumps(report, indent=2))
