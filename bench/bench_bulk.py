"""Bulk: 100,000 approved grants applied by a real worker, against raw psycopg2 doing the same work.

Issue 15 asks for "100,000 grants (10,000 people x 1,000 tables)"; those two factors make 10
million. We keep 100,000 grants on 1,000 tables, i.e. 100 people x 1,000 tables: the floor is the
old scheme's statements, and with 10,000 people on 10 tables every table would hold 10,000
grantees, which the old scheme cannot do at all (PostgreSQL refuses a table's ACL beyond a few
thousand entries, see bench_one_table.py, which covers 10,000 people on one table).

The target holds 1,000 tables (4 schemas of 250); 100 portal users each hold an approved (not yet
applied) read grant on every table: 100,000 grants with their plan digests and queued jobs, made in
bulk outside the measurement. Measured: from publishing the jobs as one bulk commit does
(`batched_publishing()` → `publish()`: batches of PROVISIONING_BATCH_SIZE) to the last job
recorded, with one worker (`--pool=solo`). The portal does everything it does for any job: claim,
plan digest check against the dataset's columns, per-object locks, desired state read, apply
(CREATE ROLE once per user, GRANT USAGE once per user and schema, REVOKE ALL + GRANT SELECT per
grant), set-based verification, and the job rows, grant status and one audit event per grant.

Floor, in the same run: bare psycopg2 on one reused connection, for each grant one transaction
with the same statements the old scheme runs for it (GRANT USAGE ON SCHEMA, REVOKE ALL, GRANT
SELECT), for other, pre-created roles. Target ≥ 1.0x the floor's throughput (issue 15).

Run with `make bench` (BENCH_BULK_USERS / BENCH_BULK_TABLES change the size, e.g. 100 x 100 for
10,000 grants); writes bench/results/bulk.json.
"""

from __future__ import annotations

import cProfile
import gc
import io
import json
import os
import pstats
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from psycopg2 import sql

from bench.sizes import size
from bench.workload import (
    NamedWorker,
    approved_read_grants,
    assert_all_applied,
    batch_times,
    describe_batches,
    drop_roles,
    publish_and_wait,
)
from governance import provisioning
from governance.models import Dataset, DataSource
from governance.provisioners import postgres as pg
from governance.services.reconcile import reconcile_source
from governance.services.sync import datasource_sync
from tests import tls_target
from tests.provisioning.conftest import ROLE_PREFIX, admin_connection, target_can

USERS = size(100, 5, "BENCH_BULK_USERS")
TABLES = size(1_000, 8, "BENCH_BULK_TABLES")
SCHEMAS = 4
TARGET_RATIO = 1.0
DEADLINE_S = 3_600.0  # a hang guard, not a figure
# BENCH_PROFILE=1: run the first batch in this process under cProfile and print where its time goes
# (BENCH_PROFILE_BATCH=N: the N-th batch instead, the ones before it run in-process unprofiled).
PROFILE = os.environ.get("BENCH_PROFILE", "") not in ("", "0")
RESULTS = Path(__file__).resolve().parent / "results"

pytestmark = pytest.mark.django_db(transaction=True)


def schema_names() -> list[str]:
    return [f"bench_bulk_{i}" for i in range(SCHEMAS)]


def tables() -> list[tuple[str, str]]:
    per_schema = -(-TABLES // SCHEMAS)
    return [(s, f"t{j:03d}") for s in schema_names() for j in range(per_schema)][:TABLES]


@pytest.fixture
def bulk_target(target_source: DataSource) -> Iterator[list[str]]:
    """The tables, synced into the catalog; the floor's roles. Yields the floor role names."""
    floor_roles = [f"{ROLE_PREFIX}floor_{i}" for i in range(USERS)]
    conn = admin_connection(target_source.database)
    with conn.cursor() as cur:
        for schema in schema_names():
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for schema, name in tables():
            cur.execute(
                sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, amount numeric, note text)").format(
                    sql.Identifier(schema, name)
                )
            )
        for role in floor_roles:
            cur.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        # The portal connects as the least-privileged role of docs/security.md: it grants only what
        # the DBA gave it WITH GRANT OPTION, as for every schema of the target.
        for schema in schema_names():
            tls_target.grant_schema(cur, schema, tls_target.PORTAL_ROLE)
    datasource_sync(source=target_source)
    try:
        yield floor_roles
    finally:
        pg.POOL.close_all()
        with conn.cursor() as cur:
            for schema in schema_names():
                cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        drop_roles(conn, floor_roles)
        conn.close()


def arrange_grants(source: DataSource) -> list[tuple[int, int | None]]:
    """USERS x TABLES approved read grants with their plan digests, and their queued jobs."""
    datasets = list(Dataset.objects.filter(source=source, schema__in=schema_names()).select_related("classification"))
    assert len(datasets) == TABLES
    return approved_read_grants(source, [f"bulk{i:03d}" for i in range(USERS)], datasets)


def raw_floor(dbname: str, roles: list[str]) -> float:
    """Seconds for bare psycopg2 to run every grant's statements, one transaction per grant."""
    conn = admin_connection(dbname)
    conn.autocommit = False
    statements = [
        sql.SQL(
            "GRANT USAGE ON SCHEMA {schema} TO {role}; REVOKE ALL ON TABLE {table} FROM {role}; "
            "GRANT SELECT ON TABLE {table} TO {role}"
        )
        .format(schema=sql.Identifier(schema), table=sql.Identifier(schema, name), role=sql.Identifier(role))
        .as_string(conn)
        for role in roles
        for schema, name in tables()
    ]
    started = time.perf_counter()
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
            conn.commit()
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def test_bulk_apply_throughput(
    target_source: DataSource, bulk_target: list[str], production_worker: NamedWorker
) -> None:
    entries = arrange_grants(target_source)
    n = len(entries)
    ids = [pk for pk, _ in entries]

    if PROFILE:  # one batch in this process under cProfile, then the rest as usual
        from governance.services.engine.run import provisioning_jobs_run

        gc.collect()
        gc.freeze()  # as the worker does after start-up
        profiler = cProfile.Profile()
        size = settings.PROVISIONING_BATCH_SIZE
        # BENCH_PROFILE_BATCH=N: the batches before the N-th (0-based) run here unprofiled first, so
        # that a steady-state batch (packages and roles already made) is the one profiled.
        skip = int(os.environ.get("BENCH_PROFILE_BATCH", "0"))
        for k in range(skip):
            provisioning_jobs_run(job_ids=ids[k * size : (k + 1) * size])
        first = ids[skip * size : (skip + 1) * size]
        with CaptureQueriesContext(connection) as queries:
            t0 = time.perf_counter()
            profiler.runcall(provisioning_jobs_run, job_ids=first)
            batch_ms = (time.perf_counter() - t0) * 1000
        out = io.StringIO()
        order = os.environ.get("BENCH_PROFILE_SORT", "cumulative")
        pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(40)
        print(out.getvalue())
        for q in sorted(queries.captured_queries, key=lambda q: -float(q["time"]))[:8]:
            print(f"  {float(q['time']) * 1000:6.1f} ms  {q['sql'][:110]}")
        print(f"one batch of {len(first)} in-process: {batch_ms:.0f} ms (profiled), {len(queries)} portal queries")
    portal_s = publish_and_wait(entries, DEADLINE_S)
    assert_all_applied(ids)
    # Where each batch's time went (its whole run in the worker, and its target transaction), first
    # and last: a cost that grows with the run shows as the last batches slower than the first.
    batches = batch_times()
    sample_role = provisioning.managed_role_name(target_source, "u", "bulk000")
    assert tables()[0] == ("bench_bulk_0", "t000")
    assert target_can(target_source.database, sample_role, "SELECT * FROM bench_bulk_0.t000")
    drift = reconcile_source(source=target_source, fix=False)
    assert not drift.drift, drift.drift[:5]

    floor_s = raw_floor(target_source.database, bulk_target)
    portal_rate = n / portal_s
    floor_rate = n / floor_s
    ratio = portal_rate / floor_rate
    result = {
        "grants": n,
        "users": USERS,
        "tables": TABLES,
        "batch_size": settings.PROVISIONING_BATCH_SIZE,
        "portal_s": portal_s,
        "portal_grants_per_s": portal_rate,
        "floor_s": floor_s,
        "floor_grants_per_s": floor_rate,
        "ratio_vs_floor": ratio,
        "jobs_first_attempt": n,
        "batches_whole_target_ms": batches,
        "cpu_count": os.cpu_count(),
        "libpq_version": psycopg2.__libpq_version__,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bulk.json").write_text(json.dumps(result, indent=2))
    print(
        f"\nbulk apply of {n} grants: portal {portal_s:.2f} s ({portal_rate:,.0f} grants/s, one worker, "
        f"batches of {settings.PROVISIONING_BATCH_SIZE}); floor raw psycopg2 one txn per grant {floor_s:.2f} s "
        f"({floor_rate:,.0f} grants/s); ratio = {ratio:.2f} (target ≥ {TARGET_RATIO})\n"
        f"  {describe_batches(batches)}"
    )
