"""Data quality at size (issue 21): 100 checks on one table of 10 million rows, measured by the
portal's run against the same checks run by hand, one statement each, on the same source.

The floor is what a person (or a tool that runs one query per check) would do: each check's own
`SELECT count(*) FILTER (WHERE <fails>), count(<col>) FROM t`, one after another, in one session.
The portal measures the row checks of a table in one scan (quality.engine.checks.scan_query). Both
read the whole table (no sampling: QUALITY_SAMPLE_ABOVE_ROWS is raised for the run), so the ratio
compares equal work. Load on the source is read from pg_stat_statements: shared blocks touched and
statements run, per phase.

Run with `make bench` (BENCH_QUALITY_ROWS overrides the size); `make test` runs it at 20,000 rows.
Figures in docs/performance.md ("Data quality").
"""

from __future__ import annotations

import time
from typing import Any

import psycopg2
import pytest

from bench.sizes import size
from governance.models import Dataset
from quality.engine import checks as engine
from quality.models import CheckStatus
from quality.services.checks import quality_check_create
from quality.services.runs import quality_run
from tests.provisioning.conftest import RUN, admin_connection, register_target
from tests.tls_target import TlsCluster

ROWS = size(10_000_000, 20_000, "BENCH_QUALITY_ROWS")
INTS = [f"n{i}" for i in range(10)]
TEXTS = [f"t{i}" for i in range(5)]


def build(target_server: TlsCluster) -> str:
    name = f"gov_bq_{RUN}"
    ints = ", ".join(f"{c} int" for c in INTS)
    texts = ", ".join(f"{c} text" for c in TEXTS)
    target_server.create_database(
        name,
        [
            "CREATE SCHEMA wide",
            f"CREATE TABLE wide.events (id bigint PRIMARY KEY, {ints}, {texts}, at timestamptz)",
            "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
        ],
    )
    values = ", ".join(f"CASE WHEN i % {7 + k} = 0 THEN NULL ELSE (i * {k + 3}) % 1000 END" for k in range(10))
    words = ", ".join(
        f"(ARRAY['alpha','beta','gamma','delta'])[1 + (i + {k}) % 4] || '-' || (i % 97)" for k in range(5)
    )
    conn = admin_connection(name)
    with conn.cursor() as cur:
        # The expressions are this module's constants, not input.
        fill = f"INSERT INTO wide.events SELECT i, {values}, {words}, now() - (i || ' seconds')::interval"
        cur.execute(fill.replace("%", "%%") + " FROM generate_series(1, %s) i", [ROWS])
        cur.execute("VACUUM ANALYZE wide.events")
    conn.close()
    return name


def definitions() -> list[dict[str, Any]]:
    """100 checks: completeness on every column, ranges, patterns, allowed values, uniqueness."""
    out: list[dict[str, Any]] = []
    for c in [*INTS, *TEXTS]:
        out.append({"kind": "completeness", "column": c, "threshold": 0.5})
    for c in INTS:
        for low, high in ((0, 999), (0, 500), (100, 900), (1, 998)):
            out.append({"kind": "range", "column": c, "params": {"min": low, "max": high}, "threshold": 1.0})
    for c in TEXTS:
        for k in range(3):
            out.append(
                {
                    "kind": "pattern",
                    "column": c,
                    "params": {"pattern": f"^(alpha|beta|gamma)-[0-9]{{1,{k + 1}}}$"},
                    "threshold": 1.0,
                }
            )
        for k in range(4):
            values = [f"{w}-{n}" for w in ("alpha", "beta", "gamma", "delta") for n in range(k * 20, k * 20 + 20)]
            out.append({"kind": "allowed_values", "column": c, "params": {"values": values}, "threshold": 1.0})
    for c in INTS:
        out.append({"kind": "uniqueness", "column": c, "threshold": 1.0})
    assert len(out) == 100, len(out)
    return [{"name": f"check {i:03d}", **d} for i, d in enumerate(out)]


def load(dbname: str) -> tuple[int, int]:
    """(statements, shared blocks touched) on the bench database since the last reset."""
    conn = admin_connection(dbname)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT coalesce(sum(calls), 0), coalesce(sum(shared_blks_hit + shared_blks_read), 0)"
            " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
            " AND query NOT ILIKE '%pg_stat_statements%'"
        )
        calls, blocks = cur.fetchone()
        cur.execute("SELECT pg_stat_statements_reset()")
    conn.close()
    return int(calls), int(blocks)


def by_hand(params: dict[str, Any], specs: list[engine.CheckSpec]) -> list[int]:
    """Each check as its own statement, in one read-only session: the failing rows per check."""
    conn = psycopg2.connect(**params)
    conn.set_session(readonly=True, autocommit=True)
    failing = []
    with conn.cursor() as cur:
        for spec in specs:
            cur.execute(engine.scan_query("wide", "events", [spec], None))
            failing.append(int(cur.fetchone()[1]))
    conn.close()
    return failing


@pytest.mark.django_db(transaction=True)
def test_100_checks_on_one_table(target_server: TlsCluster, classifications: Any, owner: Any, settings: Any) -> None:
    from governance.catalog.introspect import connection_params
    from governance.services.sync import datasource_sync

    settings.QUALITY_SAMPLE_ABOVE_ROWS = 10 * ROWS  # equal work: both read every row
    settings.QUALITY_RUN_TIME_LIMIT_SECONDS = 3600
    dbname = build(target_server)
    source = register_target(f"bq_{RUN}", dbname, owner=owner, default_classification=classifications["internal"])
    datasource_sync(source=source)
    dataset = Dataset.objects.get(source=source, schema="wide", name="events")
    checks = [quality_check_create(actor=owner, dataset=dataset, **d) for d in definitions()]
    specs = [engine.CheckSpec(c.pk, c.kind, c.column, c.params) for c in checks]
    params = connection_params(source)
    by_hand(params, specs[:5])  # warm the cache for both phases alike
    load(dbname)

    started = time.perf_counter()
    hand = by_hand(params, specs)
    hand_s = time.perf_counter() - started
    hand_calls, hand_blocks = load(dbname)

    started = time.perf_counter()
    run = quality_run(dataset=dataset)
    portal_s = time.perf_counter() - started
    portal_calls, portal_blocks = load(dbname)

    results = {r.check_ref_id: r for r in run.results.all()}
    assert all(r.status != CheckStatus.ERROR for r in results.values()), [r.message for r in results.values()]
    assert [results[c.pk].failing for c in checks] == hand  # the same answers, check by check
    print(
        f"\nquality: {len(checks)} checks on {ROWS:,} rows: portal run {portal_s:.2f} s"
        f" ({portal_calls} statements, {portal_blocks:,} shared blocks) vs by hand {hand_s:.2f} s"
        f" ({hand_calls} statements, {hand_blocks:,} blocks); time ratio {portal_s / hand_s:.2f},"
        f" blocks ratio {portal_blocks / max(hand_blocks, 1):.3f}"
    )
