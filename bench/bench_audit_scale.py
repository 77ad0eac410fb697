"""The audit trail at scale (issue 18): 10,000,000 events over twelve months in the partitioned table.

1. Fill: EVENTS events, evenly over the last 365 days (ids in time order, as the portal writes them),
   5,000 actors and 200,000 targets (50 events each), written by the server in chunks of 1,000,000
   (INSERT ... SELECT generate_series: the fastest path into the same table, indexes and triggers).
   Their MACs are random 64-character strings, not real MACs: search and export never read them, and
   computing 10 million HMACs in Python would make the fill, not the search, the benchmark (the
   verification's cost is bench_audit.py's). Then ANALYZE.
2. Search through the real API (Django's test client: middleware, session auth, DRF view, FilterSet,
   cursor pagination, serializer; the default page of 100): by actor over the last 30 days, and by
   target; p50/p95 of SEARCHES calls each, against the floor of the same SQL (captured from the
   view) run raw through psycopg2, and the same call for an actor without events (the request's
   cost around the query). Target (issue 18): API p50 <= 5 ms. The 30-day query's plan must
   touch no month before the window (pruning; the empty months created ahead remain in it).
3. Export: the CSV export of EXPORT events, streamed (the response consumed as a client would),
   and of EXPORT/10; peak Python memory (tracemalloc) and peak RSS of each. Bounded memory: the
   peak of EXPORT must not grow with the count (asserted: within 2x of the peak at EXPORT/10).

Run with `make bench` (BENCH_AUDIT_SCALE_EVENTS, BENCH_AUDIT_EXPORT_EVENTS override the sizes);
writes bench/results/audit_scale.json. The 4-writer write load is bench_audit.py's.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import psycopg2
import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from audit import partitions
from bench.sizes import size

RESULTS = Path(__file__).resolve().parent / "results"
EVENTS = size(10_000_000, 20_000, "BENCH_AUDIT_SCALE_EVENTS")
EXPORT = size(1_000_000, 20_000, "BENCH_AUDIT_EXPORT_EVENTS")
SEARCHES = size(200, 20)
ACTORS = 5_000 if EVENTS >= 1_000_000 else 50
TARGETS = max(EVENTS // 50, 10)
CHUNK = 1_000_000
DAYS = 365

pytestmark = pytest.mark.django_db(transaction=True)

FILL = """
INSERT INTO audit_auditevent (id, occurred_at, actor_username, source, ip_address, user_agent, request_id, action,
    outcome, target_type, target_id, target_repr, changes, reason, metadata, mac)
SELECT nextval(pg_get_serial_sequence('audit_auditevent', 'id')),
    %(start)s::timestamptz + i * %(step)s::interval,
    'user' || lpad(((i * 7919) %% %(actors)s)::text, 4, '0'),
    (ARRAY['web', 'api', 'task', 'admin'])[1 + (i %% 4)],
    ('10.' || (i %% 250) || '.' || ((i / 250) %% 250) || '.7')::inet,
    'Mozilla/5.0 (X11; Linux x86_64) portal-bench',
    md5(i::text),
    (ARRAY['access_request.submitted', 'access_request.approved', 'grant.activated', 'grant.revoked',
           'dataset.updated', 'role.updated', 'access_request.rejected', 'grant.extended'])[1 + (i %% 8)],
    CASE WHEN i %% 50 = 0 THEN 'denied' ELSE 'success' END,
    (ARRAY['access_request', 'grant', 'dataset', 'role', 'user'])[1 + (i %% 5)],
    ((i * 104729) %% %(targets)s)::text,
    'object ' || ((i * 104729) %% %(targets)s),
    jsonb_build_object('state', jsonb_build_array('submitted', 'approved')),
    CASE WHEN i %% 10 = 0 THEN 'quarterly access review' ELSE '' END,
    jsonb_build_object('i', i),
    md5(i::text) || md5((i + 1)::text)
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
"""


def fill() -> dict[str, Any]:
    now = timezone.now()
    start = now - dt.timedelta(days=DAYS)
    # The months of the fill: a year back (beat keeps only the coming ones).
    partitions.ensure_months(today=partitions.month_of(start), count=13)
    step = dt.timedelta(days=DAYS) / EVENTS
    began = time.perf_counter()
    for first in range(0, EVENTS, CHUNK):
        last = min(EVENTS, first + CHUNK) - 1
        params: dict[str, Any] = {
            "start": start, "step": step, "actors": ACTORS, "targets": TARGETS, "first": first, "last": last,
        }  # fmt: skip
        with connection.cursor() as cur:
            cur.execute(FILL, params)
    filled = time.perf_counter() - began
    began = time.perf_counter()
    with connection.cursor() as cur:
        cur.execute("ANALYZE audit_auditevent")
    analysed = time.perf_counter() - began
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM audit_auditevent")
        count = int(cur.fetchone()[0])
        cur.execute(
            "SELECT sum(pg_total_relation_size(i.inhrelid)) FROM pg_inherits i"
            " WHERE i.inhparent = 'audit_auditevent'::regclass"
        )
        total_bytes = int(cur.fetchone()[0])
    assert count >= EVENTS
    return {
        "events": count,
        "fill_s": round(filled, 1),
        "fill_per_s": round(EVENTS / filled),
        "analyze_s": round(analysed, 1),
        "size_gb": round(total_bytes / 1e9, 2),
        "start": start,
        "partitions": len(partitions.months()),
    }


def _raw() -> Any:
    settings = connection.settings_dict
    conn = psycopg2.connect(
        dbname=settings["NAME"],
        user=settings["USER"] or None,
        password=settings["PASSWORD"] or None,
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
    )
    conn.autocommit = True
    return conn


def _ms(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return round(statistics.median(ordered), 2), round(ordered[int(len(ordered) * 0.95) - 1], 2)


def search(client: Client, urls: list[str], raw: Any) -> dict[str, Any]:
    """p50/p95 of the API call, of its audit query alone, replayed raw, and of the same call for an
    actor with no event (what the request costs around an empty page: middleware, sign-in, DRF)."""
    empty = []
    for k in range(len(urls)):
        began = time.perf_counter()
        response = client.get("/api/v1/audit-events/?" + _query(actor=f"nobody{k}"))
        empty.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200 and response.json()["results"] == []
    api, floor, statements, rows = [], [], [], 0
    for url in urls:
        with CaptureQueriesContext(connection) as queries:
            began = time.perf_counter()
            response = client.get(url)
            api.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, response.content[:300]
        rows += len(response.json()["results"])
        statements.append(next(q["sql"] for q in queries.captured_queries if '"audit_auditevent"' in q["sql"]))
    with raw.cursor() as cur:
        for statement in statements:
            began = time.perf_counter()
            cur.execute(statement)
            cur.fetchall()
            floor.append((time.perf_counter() - began) * 1000)
        cur.execute("EXPLAIN (FORMAT JSON) " + statements[0])
        plan = json.dumps(cur.fetchone()[0])
    touched = sorted(set(_partitions_in(plan)))
    (api_p50, api_p95), (floor_p50, floor_p95) = _ms(api), _ms(floor)
    return {
        "calls": len(urls),
        "rows_per_call": round(rows / len(urls), 1),
        "api_p50_ms": api_p50,
        "api_p95_ms": api_p95,
        "sql_p50_ms": floor_p50,
        "sql_p95_ms": floor_p95,
        "ratio_p50": round(api_p50 / floor_p50, 2) if floor_p50 else None,
        "empty_page_p50_ms": _ms(empty)[0],
        "partitions_in_plan": touched,
        "sql": statements[0],
    }


def _partitions_in(plan: str) -> list[str]:
    import re

    return re.findall(r'"Relation Name": "(audit_auditevent_[a-z0-9_]+)"', plan)


def export(client: Client, start: dt.datetime, count: int) -> dict[str, Any]:
    """Stream the CSV export of about `count` events (a window from the start of the fill)."""
    until = start + dt.timedelta(days=DAYS) * (count / EVENTS)
    url = "/api/v1/audit-events/export/?" + _query(format="csv", since=start, until=until)
    rss_reset = _reset_peak_rss()
    rss_before = _rss_kb("VmRSS")
    tracemalloc.start()
    began = time.perf_counter()
    response = client.get(url)
    assert response.status_code == 200 and response.streaming
    lines, size_bytes = 0, 0
    streamed: Iterable[bytes] = cast(Any, response).streaming_content
    for chunk in streamed:
        lines += chunk.count(b"\n")
        size_bytes += len(chunk)
    elapsed = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    exported = lines - 1  # the header
    assert abs(exported - count) <= max(2, count // 1000), (exported, count)
    return {
        "events": exported,
        "seconds": round(elapsed, 1),
        "events_per_s": round(exported / elapsed),
        "mb": round(size_bytes / 1e6, 1),
        "python_peak_mb": round(peak / 1e6, 2),
        "rss_peak_growth_mb": round((_rss_kb("VmHWM") - rss_before) / 1000, 1) if rss_reset else None,
    }


def _query(**params: Any) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v.isoformat().replace("+00:00", "Z") if isinstance(v, dt.datetime) else v
                      for k, v in params.items()})  # fmt: skip


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    """Linux resets the process's peak RSS (VmHWM) when 5 is written to clear_refs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def test_audit_at_scale(auditor: User) -> None:
    report: dict[str, Any] = {"fill": fill()}
    start = report["fill"].pop("start")
    client = Client()
    client.force_login(auditor)
    since = timezone.now() - dt.timedelta(days=30)
    actors = [f"user{(k * 37) % ACTORS:04d}" for k in range(SEARCHES)]
    targets = [((k * 7_919) % TARGETS) for k in range(SEARCHES)]
    kinds = ["access_request", "grant", "dataset", "role", "user"]
    # A target's type follows from its id in the fill (i mod 5 decides both).
    by_actor = [f"/api/v1/audit-events/?{_query(actor=a, since=since)}" for a in actors]
    by_target = [
        f"/api/v1/audit-events/?{_query(target_type=kinds[(t * _inverse(104_729 % 5)) % 5], target_id=t)}"
        for t in targets
    ]
    raw = _raw()
    try:
        client.get(by_actor[0])  # warm: the first call pays for imports and the session
        report["search_actor_30d"] = search(client, by_actor, raw)
        report["search_target"] = search(client, by_target, raw)
    finally:
        raw.close()
    small = max(EXPORT // 10, 4_000)  # above the export's fetch of 2,000 rows: the steady state
    report["export_small"] = export(client, start, small)
    report["export"] = export(client, start, EXPORT)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "audit_scale.json").write_text(json.dumps(report, indent=2, default=str))

    fill_r, act, tgt = report["fill"], report["search_actor_30d"], report["search_target"]
    exp, exs = report["export"], report["export_small"]
    print()
    print(
        f"audit scale: {fill_r['events']} events in {fill_r['partitions']} monthly partitions, "
        f"{fill_r['size_gb']} GB with indexes; filled in {fill_r['fill_s']} s ({fill_r['fill_per_s']}/s), "
        f"ANALYZE {fill_r['analyze_s']} s"
    )
    for name, found in (("by actor, last 30 days", act), ("by target", tgt)):
        print(
            f"audit scale: API search {name}: p50 {found['api_p50_ms']} ms, p95 {found['api_p95_ms']} ms "
            f"({found['rows_per_call']} rows/page) vs its SQL raw p50 {found['sql_p50_ms']} ms, "
            f"p95 {found['sql_p95_ms']} ms: x{found['ratio_p50']}; an empty page p50 {found['empty_page_p50_ms']} ms "
            f"(target p50 <= 5 ms: {'met' if found['api_p50_ms'] <= 5 else 'NOT MET'}); "
            f"partitions in the plan: {len(found['partitions_in_plan'])}"
        )
    print(
        f"audit scale: CSV export of {exp['events']} events streamed in {exp['seconds']} s "
        f"({exp['events_per_s']}/s, {exp['mb']} MB): Python peak {exp['python_peak_mb']} MB, RSS peak growth "
        f"{exp['rss_peak_growth_mb']} MB; of {exs['events']} events: Python peak {exs['python_peak_mb']} MB, "
        f"RSS peak growth {exs['rss_peak_growth_mb']} MB"
    )
    # Pruning: the 30-day search reads no month before the window (the months after it, created
    # ahead and empty, and the default partition cannot be excluded by `since` alone).
    first = partitions.name_of(partitions.month_of(since))
    assert all(p >= first for p in act["partitions_in_plan"] if p != partitions.DEFAULT), act["partitions_in_plan"]
    assert first in act["partitions_in_plan"]
    # Bounded memory: ten times the events, not ten times the memory.
    assert exp["python_peak_mb"] <= 2 * exs["python_peak_mb"] + 1, (exs, exp)


def _inverse(value: int) -> int:
    """The inverse of `value` modulo 5 (the fill's target id is i * 104729 mod TARGETS)."""
    return next(k for k in range(1, 5) if (value * k) % 5 == 1)
