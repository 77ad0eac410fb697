"""Approval → grant verified Active: latency percentiles against the floor measured in the same run.

Floor = a trivial Celery task's round trip (publish → the worker runs it) + the raw GRANT
transaction (REVOKE + GRANT on a reused psycopg2 connection). The portal's path adds: claiming the
job, the plan digest check, the per-object lock, verification, and recording the outcome.
Run with `make bench`; prints one line per metric and writes bench/results/approval_latency.json.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import Group
from psycopg2 import sql

from accounts.models import User
from accounts.roles import REQUESTERS
from bench.sizes import size
from governance.models import Dataset, Grant, GrantStatus
from governance.services.requests import access_request_approve, access_request_submit
from governance.tasks import ping
from tests.provisioning.conftest import ROLE_PREFIX, admin_connection

N = size(300, 5, "BENCH_APPROVALS")
ECHOES = size(100, 10)
GRANT_PAIRS = size(200, 20)
RESULTS = Path(__file__).resolve().parent / "results"
# BENCH_PROFILE=1: also run jobs in this process (medians per job and per portal query, one cProfile).
PROFILE = os.environ.get("BENCH_PROFILE", "") not in ("", "0")
PROFILE_RUNS = size(40, 5, "BENCH_PROFILE_RUNS")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": pct(values, 50), "p95": pct(values, 95), "p99": pct(values, 99), "mean": statistics.mean(values)}


def celery_round_trip(samples: int) -> list[float]:
    r = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    out = []
    for _ in range(samples):
        key = f"bench:{uuid.uuid4().hex}"
        sent = time.time()
        ping.delay(key)
        while (value := r.get(key)) is None:
            time.sleep(0.0002)
        out.append((float(value) - sent) * 1000)
    return out


def raw_grant_pair(dbname: str, samples: int) -> list[float]:
    conn = admin_connection(dbname)
    role = f"{ROLE_PREFIX}floor"
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    conn.autocommit = False
    out = []
    table = sql.SQL("finance.ledger")
    for _ in range(samples):
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(table, sql.Identifier(role)))
            cur.execute(sql.SQL("GRANT SELECT ON TABLE {} TO {}").format(table, sql.Identifier(role)))
        conn.commit()
        out.append((time.perf_counter() - started) * 1000)
    conn.close()
    return out


def _queued_job(ds: Dataset, owner: Any, name: str) -> Any:
    """An approved grant with its apply job queued, made while provisioning is off so that the
    worker never sees it (the job is run in this process)."""
    from governance.models import DataSource, ProvisioningJob

    user = User.objects.create_user(name, password="x" * 16)
    user.groups.add(Group.objects.get(name=REQUESTERS))
    DataSource.objects.filter(pk=ds.source_id).update(provisioning_enabled=False)
    req = access_request_submit(requester=user, dataset=ds, justification="bench", duration=dt.timedelta(days=1))
    access_request_approve(access_request=req, approver=owner)
    DataSource.objects.filter(pk=ds.source_id).update(provisioning_enabled=True)
    grant = Grant.objects.get(source_request=req)
    return ProvisioningJob.objects.create(grant=grant, action="apply", plan_digest=grant.plan_digest)


def profile_jobs(ds: Dataset, owner: Any, runs: int = PROFILE_RUNS) -> None:
    """More approvals' jobs run in this process (the worker's path minus the Celery hop), each a new
    grantee as in the benchmark: the median time of a job and of each of its portal queries, and the
    target transaction's time; then one more under cProfile."""
    import cProfile
    import gc
    import io
    import pstats

    from django.db import connection

    from governance.services.engine.run import provisioning_job_run

    totals: list[float] = []
    targets: list[float] = []
    per_query: dict[int, list[float]] = {}
    texts: dict[int, str] = {}
    gc.collect()
    gc.freeze()  # as the worker does after start-up
    captured: list[tuple[str, float]] = []

    def timed(execute: Any, sql_text: str, params: Any, many: bool, context: Any) -> Any:
        began = time.perf_counter()
        try:
            return execute(sql_text, params, many, context)
        finally:
            captured.append((sql_text, (time.perf_counter() - began) * 1000))

    for i in range(runs + 1):
        job = _queued_job(ds, owner, f"bench_profiled{i}")
        captured.clear()
        with connection.execute_wrapper(timed):
            started = time.perf_counter()
            if i < runs:
                provisioning_job_run(job_id=job.pk)
            else:
                profiler = cProfile.Profile()
                profiler.runcall(provisioning_job_run, job_id=job.pk)
            ms = (time.perf_counter() - started) * 1000
        job.refresh_from_db()
        assert job.grant.status == GrantStatus.ACTIVE
        if i == runs:
            break
        totals.append(ms)
        targets.append(job.duration_ms or 0.0)
        for n, (text, q_ms) in enumerate(captured):
            per_query.setdefault(n, []).append(q_ms)
            texts[n] = " ".join(text.split())[:120]
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats(os.environ.get("BENCH_PROFILE_SORT", "cumulative")).print_stats(30)
    print(out.getvalue())
    print(f"portal queries of one job through Django's cursor (median of {runs}):")
    for n in sorted(per_query):
        print(f"  {statistics.median(per_query[n]):5.2f} ms  {texts[n]}")
    print(
        f"one job in-process: median {statistics.median(totals):.2f} ms (p90 {pct(totals, 90):.2f}), "
        f"of which the target transaction {statistics.median(targets):.2f} ms; {len(per_query)} portal queries"
    )


@pytest.mark.django_db(transaction=True)
def test_approval_to_active_latency(target_source: Any, owner: Any, celery_worker: Any) -> None:
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    requesters = Group.objects.get(name=REQUESTERS)
    latencies = []
    for i in range(N):
        user = User.objects.create_user(f"bench{i}", password="x" * 16)
        user.groups.add(requesters)
        req = access_request_submit(requester=user, dataset=ds, justification="bench", duration=dt.timedelta(days=1))
        access_request_approve(access_request=req, approver=owner)  # commits, then publishes the job
        committed = time.time()
        grant = Grant.objects.get(source_request=req)
        while True:
            grant.refresh_from_db(fields=["status", "verified_at"])
            if grant.status == GrantStatus.ACTIVE:
                break
            if grant.status == GrantStatus.FAILED:
                raise AssertionError(f"grant {grant.pk} failed")
            time.sleep(0.005)  # poll gently: the worker and PostgreSQL share the 2 cores with this loop
        assert grant.verified_at is not None
        latencies.append((grant.verified_at.timestamp() - committed) * 1000)

    if PROFILE:
        profile_jobs(ds, owner)
    echo = celery_round_trip(ECHOES)
    grant_pair = raw_grant_pair(target_source.database, GRANT_PAIRS)
    floor = statistics.median(echo) + statistics.median(grant_pair)
    ours = summary(latencies)
    result = {
        "approvals": N,
        "approval_to_active_ms": ours,
        "celery_echo_ms": summary(echo),
        "grant_pair_ms": summary(grant_pair),
        "floor_p50_ms": floor,
        "ratio_p50_vs_floor": ours["p50"] / floor,
        "cpu_count": os.cpu_count(),
        "libpq_version": psycopg2.__libpq_version__,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "approval_latency.json").write_text(json.dumps(result, indent=2))
    print(
        f"\napproval→active over {N}: p50 {ours['p50']:.1f} ms, p95 {ours['p95']:.1f} ms, p99 {ours['p99']:.1f} ms; "
        f"floor (celery echo p50 {statistics.median(echo):.1f} + GRANT pair p50 {statistics.median(grant_pair):.2f}) "
        f"= {floor:.1f} ms; ratio p50/floor = {result['ratio_p50_vs_floor']:.2f} (target ≤ 2.5), "
        f"p99 target ≤ 60 ms"
    )
