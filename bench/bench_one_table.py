"""10,000 distinct people granted read on ONE table, applied by a real worker; the table's ACL; and
the number of grantees at which the old one-role-per-grant scheme fails.

Issue 15 item 6: "10,000 distinct people granted read on ONE table: every grant Active and
verified, reconcile clean; also report the grantee count at which the old one-role-per-grant scheme
failed". A table's ACL (`pg_class.relacl`) is stored inline in its catalog row, which PostgreSQL
cannot TOAST (pg_class has no TOAST table): once the compressed row exceeds a page, every further
GRANT on the table fails with `row is too big`. With access packages the ACL grows with the number
of distinct (dataset, level, column set) packages, not with the number of people.

The target holds one fresh table; 10,000 new portal users each hold an approved (not yet applied)
read grant on it, with their plan digests and queued jobs, made in bulk outside the measurement
(bench/workload.py, as bench_bulk.py). Measured: from publishing the jobs as one bulk commit does to
the last job recorded, with one worker (`--pool=solo`, production sweeper settings); then the
table's ACL (`cardinality(relacl)`, `pg_column_size(relacl)`) and `reconcile_source(fix=False)`.

Floor and failure point, in the same run, with bare psycopg2 as the portal's role on a second fresh
table: the old scheme's statements for a new person (CREATE ROLE, GRANT USAGE ON SCHEMA, REVOKE ALL,
GRANT SELECT, GRANT CONNECT ON DATABASE), one transaction per person, until PostgreSQL refuses
(`row is too big`) or every person is granted; its rate is the floor of the portal's. Its roles are
dropped afterwards. In the smoke run the probe stops at the smoke size and must not fail.

Only correctness is asserted (every job succeeded, every grant Active and verified, a sample of
people can read the table, reconcile clean), after the figures are printed and written: a run that
fails still reports how far it got. Run with `make bench` (BENCH_ONE_TABLE_PEOPLE changes the size);
writes bench/results/one_table.json.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from django.conf import settings
from psycopg2 import sql

from bench.sizes import SMOKE, size
from bench.workload import (
    NamedWorker,
    abandon_unfinished,
    approved_read_grants,
    assert_all_applied,
    drop_roles,
    first_error,
    job_statuses,
    publish_and_wait,
)
from governance.models import Dataset, DataSource, Grant, GrantStatus, JobStatus
from governance.provisioners import postgres as pg
from governance.provisioning import managed_role_name
from governance.services.reconcile import reconcile_source
from governance.services.sync import datasource_sync
from tests import tls_target
from tests.provisioning.conftest import ROLE_PREFIX, admin_connection, target_can

PEOPLE = size(10_000, 30, "BENCH_ONE_TABLE_PEOPLE")
SCHEMA = "bench_one_table"
TABLE = "popular"  # the portal's grants
PROBE_TABLE = "old_scheme"  # the raw old-scheme probe's grants
DEADLINE_S = 3_600.0  # a hang guard, not a figure
ROW_TOO_BIG = "54000"  # program_limit_exceeded: "row is too big: size 8168, maximum size 8160"
RESULTS = Path(__file__).resolve().parent / "results"

pytestmark = pytest.mark.django_db(transaction=True)


def usernames() -> list[str]:
    return [f"one{i:05d}" for i in range(PEOPLE)]


@pytest.fixture
def one_table(target_source: DataSource) -> Iterator[Dataset]:
    """The schema with the two tables, the portal's role holding them WITH GRANT OPTION (docs/
    security.md), synced into the catalog. Afterwards the schema and every role the run made for
    it (the portal's and the probe's) are dropped."""
    conn = admin_connection(target_source.database)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
        for name in (TABLE, PROBE_TABLE):
            cur.execute(
                sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, amount numeric, note text)").format(
                    sql.Identifier(SCHEMA, name)
                )
            )
        tls_target.grant_schema(cur, SCHEMA, tls_target.PORTAL_ROLE)
    datasource_sync(source=target_source)
    try:
        yield Dataset.objects.get(source=target_source, schema=SCHEMA, name=TABLE)
    finally:
        pg.POOL.close_all()  # no pooled session of this process keeps the schema busy
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        people = [managed_role_name(target_source, "u", name) for name in usernames()]
        drop_roles(conn, people + probe_roles(PEOPLE))
        conn.close()


def acl_of(dbname: str, table: str) -> tuple[int, int]:
    """The table's ACL: its number of entries and its stored size in bytes (compressed, inline)."""
    conn = admin_connection(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT cardinality(relacl), pg_column_size(relacl) FROM pg_class WHERE oid = %s::regclass",
                [sql.Identifier(SCHEMA, table).as_string(conn)],
            )
            entries, size_bytes = cur.fetchone()
        return entries, size_bytes
    finally:
        conn.close()


def probe_roles(n: int) -> list[str]:
    return [f"{ROLE_PREFIX}old_{i}" for i in range(n)]


def old_scheme(dbname: str, people: int) -> dict[str, Any]:
    """The old scheme on the probe table with bare psycopg2, as the portal's role: per person one
    transaction with what its plan ran for a new principal, until PostgreSQL refuses or `people` are
    granted. Returns the grantees that succeeded, the seconds they took, and the refusal if any."""
    conn = admin_connection(dbname)
    conn.autocommit = False
    table = sql.Identifier(SCHEMA, PROBE_TABLE)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(tls_target.PORTAL_ROLE)))
    conn.commit()
    granted, refusal, failed_statement = 0, None, ""
    started = time.perf_counter()
    with conn.cursor() as cur:
        for role in probe_roles(people):
            ident = sql.Identifier(role)
            statements = [
                sql.SQL("CREATE ROLE {} NOLOGIN").format(ident),
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(SCHEMA), ident),
                sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(table, ident),
                sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(table, ident),
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(dbname), ident),
            ]
            try:
                for statement in statements:
                    failed_statement = statement.as_string(conn)
                    cur.execute(statement)
                conn.commit()
            except psycopg2.Error as exc:
                conn.rollback()
                refusal = f"{exc.pgcode}: {(exc.diag.message_primary or str(exc)).strip()}"
                break
            granted += 1
    elapsed = time.perf_counter() - started
    conn.close()
    return {
        "granted": granted,
        "seconds": elapsed,
        "refusal": refusal,
        "refused_statement": failed_statement.replace(role, "<role>") if refusal else None,
    }


def test_one_table_many_people(target_source: DataSource, one_table: Dataset, production_worker: NamedWorker) -> None:
    entries = approved_read_grants(target_source, usernames(), [one_table])
    ids = [pk for pk, _ in entries]

    # A job that fails fails the run (on the old scheme: the table's ACL is full), and every later
    # one would fail the same way, slowly: stop there, with what got through counted.
    portal_s = publish_and_wait(entries, DEADLINE_S, stop_at_failure=True)
    statuses = job_statuses(ids)
    if set(statuses) != {JobStatus.SUCCEEDED}:
        abandon_unfinished(production_worker, ids)
    active = Grant.objects.filter(
        dataset=one_table, status=GrantStatus.ACTIVE, verified_at__isnull=False, jobs__pk__in=ids
    ).count()
    acl_entries, acl_bytes = acl_of(target_source.database, TABLE)
    started = time.perf_counter()
    drift = reconcile_source(source=target_source, fix=False)
    reconcile_s = time.perf_counter() - started

    old = old_scheme(target_source.database, PEOPLE)
    old_entries, old_bytes = acl_of(target_source.database, PROBE_TABLE)
    portal_rate = active / portal_s
    floor_rate = old["granted"] / old["seconds"] if old["granted"] else 0.0
    ratio = portal_rate / floor_rate if floor_rate else 0.0
    result = {
        "people": PEOPLE,
        "jobs": statuses,
        "active_verified": active,
        "first_error": first_error(ids),
        "portal_s": portal_s,
        "portal_grants_per_s": portal_rate,
        "acl_entries": acl_entries,
        "acl_bytes": acl_bytes,
        "acl_entries_per_person": acl_entries / PEOPLE,
        "reconcile_s": reconcile_s,
        "reconcile_clean": drift.clean and not drift.drift,
        "reconcile_summary": drift.summary(),
        "old_scheme": {
            **old,
            "grants_per_s": floor_rate,
            "acl_entries": old_entries,
            "acl_bytes": old_bytes,
        },
        "ratio_vs_floor": ratio,
        "batch_size": settings.PROVISIONING_BATCH_SIZE,
        "cpu_count": os.cpu_count(),
        "libpq_version": psycopg2.__libpq_version__,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "one_table.json").write_text(json.dumps(result, indent=2))
    stopped = "" if statuses == {JobStatus.SUCCEEDED: PEOPLE} else " (stopped at the first failed job)"
    print(
        f"\none table, {PEOPLE:,} people: {active:,} grants Active and verified in {portal_s:.2f} s{stopped} "
        f"({portal_rate:,.0f} grants/s, one worker); jobs {statuses}; the table's ACL {acl_entries:,} entries, "
        f"{acl_bytes:,} bytes ({acl_entries / PEOPLE:.3f} entries per person); "
        f"reconcile(fix=False) {reconcile_s * 1000:.0f} ms: {drift.summary()}"
    )
    if result["first_error"]:
        print(f"  first failed job: {result['first_error'][:300]}")
    stop = f"refused after {old['granted']:,} grantees: {old['refusal']}" if old["refusal"] else "no refusal"
    print(
        f"  old scheme, raw psycopg2, one transaction per person: {old['granted']:,} of {PEOPLE:,} in "
        f"{old['seconds']:.2f} s ({floor_rate:,.0f} grants/s), {stop}; its ACL {old_entries:,} entries, "
        f"{old_bytes:,} bytes; ratio portal/floor rate = {ratio:.2f}"
    )

    if SMOKE:  # the probe stopped at the smoke size: the old scheme must not fail below it
        assert old["refusal"] is None and old["granted"] == PEOPLE, old
    elif old["refusal"] is not None:
        assert old["refusal"].startswith(ROW_TOO_BIG), old  # the limit, not some other error
    assert_all_applied(ids)
    assert statuses == {JobStatus.SUCCEEDED: PEOPLE}
    assert (SCHEMA, TABLE) == ("bench_one_table", "popular")
    for name in (usernames()[0], usernames()[-1]):
        role = managed_role_name(target_source, "u", name)
        assert target_can(target_source.database, role, "SELECT * FROM bench_one_table.popular")
    assert drift.clean and not drift.drift, drift.lines()[:5]
