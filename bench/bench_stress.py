"""Same-table stress through the full job path: two worker processes, grants and revokes on ONE table.

Two real `celery worker` processes consume the same queue. 50 users, in three groups, request and
get read access to finance.ledger, then lose it, in rounds: round r approves group r and revokes
the grants round r - 2 approved (waiting until they are active first), interleaved, in one portal
transaction, so the round's jobs are published together when it commits (a burst) and both workers
claim jobs on the same table at the same time, applies and revokes mixed; the next round is
prepared while they work (the jobs of round r - 1 may still be running).
Every job takes the same per-object lock, re-reads the grants in force and converges the role.

Counted: jobs that end `failed` (target 0), retries, and any `tuple concurrently updated` in a
job's error or a retry's audit reason; at the end the target must match the grants in force
(`reconcile_source(fix=False)` clean). Throughput is jobs / (first publish → last job finished).

The workers run with the production settings of the sweeper, retries and lock timeout (the test
fixture's 2-second "stuck" threshold would re-enqueue jobs that are merely waiting in a burst).
BENCH_STRESS_JOBS (default 1000) and BENCH_STRESS_USERS (default 50) size the run.
Run with `make bench`; prints one line and writes bench/results/stress.json.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from accounts.roles import REQUESTERS
from audit.models import AuditEvent
from bench.sizes import size
from bench.workload import NamedWorker
from governance.models import Dataset, DataSource, Grant, GrantStatus, JobAction, JobStatus, ProvisioningJob
from governance.services.grants import grant_revoke
from governance.services.reconcile import reconcile_source
from governance.services.requests import access_request_approve, access_request_submit
from tests.provisioning.conftest import Worker

JOBS = size(1000, 30, "BENCH_STRESS_JOBS")
USERS = size(50, 6, "BENCH_STRESS_USERS")
GROUPS = 3  # users take turns: approved in one round, held through the next, revoked in the one after
DEADLINE_S = float(os.environ.get("BENCH_STRESS_DEADLINE_S", "240"))
CONCURRENT_ERROR = "tuple concurrently updated"
RESULTS = Path(__file__).resolve().parent / "results"
pytestmark = pytest.mark.django_db(transaction=True)


class JobRow(NamedTuple):
    pk: int
    action: str
    status: str
    attempts: int
    last_error: str
    queued_at: dt.datetime
    started_at: dt.datetime
    finished_at: dt.datetime


@pytest.fixture
def two_workers(celery_worker: Worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NamedWorker]]:
    """Exactly two consumers: the session's worker is paused for the duration, then restarted."""
    celery_worker.stop()
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    log_dir = tmp_path_factory.mktemp("stress")
    workers = [NamedWorker(log_dir, "a", beat=True), NamedWorker(log_dir, "b", beat=False)]
    try:
        for worker in workers:
            worker.start()
        yield workers
    finally:
        for worker in workers:
            worker.stop()
        celery_worker.start()


def finished(grant_ids: list[int], status: str) -> bool:
    return Grant.objects.filter(pk__in=grant_ids, status=status).count() == len(grant_ids)


def wait_until(check: Any, what: str, deadline: float) -> None:
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"stress run timed out waiting for {what}")
        time.sleep(0.02)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def test_same_table_two_workers(target_source: DataSource, owner: Any, two_workers: list[NamedWorker]) -> None:
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    requesters = Group.objects.get(name=REQUESTERS)
    users = [User.objects.create_user(f"stress{i}", password="x" * 16) for i in range(USERS)]
    for user in users:
        user.groups.add(requesters)
    groups = [users[i::GROUPS] for i in range(GROUPS)]
    holding: dict[int, Grant] = {}  # user pk -> their grant in force (approved, or already active)
    published: dict[int, dt.datetime] = {}  # job pk -> when its round committed (and published it)
    last_job = ProvisioningJob.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    enqueued = rounds = 0
    service_s = 0.0
    deadline = time.monotonic() + DEADLINE_S

    while enqueued < JOBS:
        # Approve → wait active → revoke: round r approves group r and revokes the grants that round
        # r - 2 approved (group r + 1), while the jobs of round r - 1 may still be running.
        approve = [u for u in groups[rounds % GROUPS] if u.pk not in holding]
        revoke = [u for u in groups[(rounds + 1) % GROUPS] if u.pk in holding]
        to_revoke = [holding[u.pk].pk for u in revoke]
        wait_until(lambda ids=to_revoke: finished(ids, GrantStatus.ACTIVE), "grants to become active", deadline)
        ops: list[tuple[str, User]] = []
        for i in range(max(len(approve), len(revoke))):
            ops += [("approve", u) for u in approve[i : i + 1]] + [("revoke", u) for u in revoke[i : i + 1]]
        ops = ops[: JOBS - enqueued]
        t0 = time.monotonic()
        with transaction.atomic():  # the round's jobs are published together, at commit
            for op, user in ops:
                if op == "approve":
                    req = access_request_submit(
                        requester=user, dataset=ds, justification="stress", duration=dt.timedelta(days=1)
                    )
                    access_request_approve(access_request=req, approver=owner)
                    grant = Grant.objects.get(source_request=req)
                    holding[user.pk] = grant
                else:
                    grant_revoke(grant=holding.pop(user.pk), actor=owner, reason="stress")
        service_s += time.monotonic() - t0
        committed = timezone.now()  # the round's jobs are published now (on_commit)
        for pk in ProvisioningJob.objects.filter(pk__gt=last_job).values_list("pk", flat=True):
            published[pk] = committed
            last_job = max(last_job, pk)
        enqueued += len(ops)
        rounds += 1

    jobs = ProvisioningJob.objects.filter(grant__dataset=ds)
    wait_until(
        lambda: not jobs.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).exists(),
        "the last jobs",
        deadline,
    )
    rows = [
        JobRow(pk, action, status, attempts, last_error, queued, started or queued, done or queued)
        for pk, action, status, attempts, last_error, queued, started, done in jobs.values_list(
            "pk", "action", "status", "attempts", "last_error", "queued_at", "started_at", "finished_at"
        )
    ]
    elapsed = (max(r.finished_at for r in rows) - min(published[r.pk] for r in rows)).total_seconds()

    failed = [r for r in rows if r.status == JobStatus.FAILED]
    retried = [r for r in rows if r.attempts > 1]
    reasons = list(
        AuditEvent.objects.filter(
            action__in=["provisioning_job.retrying", "provisioning_job.failed"],
            target_id__in=[str(r.pk) for r in rows],
        ).values_list("reason", flat=True)
    )
    concurrent = sum(CONCURRENT_ERROR in r.last_error for r in rows) + sum(CONCURRENT_ERROR in x for x in reasons)
    # Jobs that started while another was still running (a wait on the table's lock, or a claim race).
    # Busy: the time at least one job was running (the union of the runs' spans).
    spans = sorted((r.started_at, r.finished_at) for r in rows)
    overlapping, busy_s, (span_start, reach) = 0, 0.0, spans[0]
    for start, end in spans[1:]:
        if start < reach:
            overlapping += 1
        else:
            busy_s += (reach - span_start).total_seconds()
            span_start = start
        reach = max(reach, end)
    busy_s += (reach - span_start).total_seconds()
    run_ms = [(r.finished_at - r.started_at).total_seconds() * 1000 for r in rows]
    latency_ms = [(r.finished_at - published[r.pk]).total_seconds() * 1000 for r in rows]
    per_worker = {w.name: w.tasks_done() for w in two_workers}

    # The grants in force are what the target holds: reconcile finds nothing.
    result = reconcile_source(source=target_source)
    assert result.principals == USERS  # the people compared (the access package is not counted)
    active = Grant.objects.filter(dataset=ds, status=GrantStatus.ACTIVE).count()
    unverified = Grant.objects.filter(dataset=ds, verified_at__isnull=True).count()

    applies = sum(r.action == JobAction.APPLY for r in rows)
    summary = {
        "jobs": len(rows),
        "applies": applies,
        "revokes": len(rows) - applies,
        "users": USERS,
        "rounds": rounds,
        "workers": 2,
        "failed": len(failed),
        "retried": len(retried),
        "tuple_concurrently_updated": concurrent,
        "overlapping_jobs": overlapping,
        "jobs_per_worker": per_worker,
        "elapsed_s": elapsed,
        "throughput_jobs_per_s": len(rows) / elapsed,
        "busy_s": busy_s,
        "throughput_while_busy_jobs_per_s": len(rows) / busy_s,
        "portal_services_s": service_s,
        "job_run_ms": {"p50": pct(run_ms, 50), "p95": pct(run_ms, 95), "max": max(run_ms)},
        "published_to_done_ms": {"p50": pct(latency_ms, 50), "p95": pct(latency_ms, 95), "max": max(latency_ms)},
        "reconcile_clean": result.clean,
        "reconcile_drift": result.lines()[:20],
        "active_grants_at_end": active,
        "unverified_grants": unverified,
        "cpu_count": os.cpu_count(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stress.json").write_text(json.dumps(summary, indent=2, default=str))
    print(
        f"\nsame-table stress: {len(rows)} jobs on one table with 2 workers: {len(failed)} failures (target 0), "
        f"elapsed {elapsed:.1f} s, throughput {len(rows) / elapsed:.1f} jobs/s"
    )
    print(
        f"  {applies} applies / {len(rows) - applies} revokes in {rounds} bursts for {USERS} users; "
        f"jobs per worker {per_worker}; {overlapping} ran while another was running; "
        f"{len(retried)} retried, {concurrent} '{CONCURRENT_ERROR}'; job run p50 {statistics.median(run_ms):.0f} ms, "
        f"published→done p50 {pct(latency_ms, 50):.0f} ms p95 {pct(latency_ms, 95):.0f} ms; "
        f"workers busy {busy_s:.1f} s ({len(rows) / busy_s:.1f} jobs/s while busy); "
        f"approve/revoke services in the bench process {service_s:.1f} s; reconcile: {result.summary()}"
    )
    assert not failed, [(r.pk, r.action, r.last_error) for r in failed[:5]]
    assert concurrent == 0
    assert unverified == 0
    assert result.clean, result.lines()[:20]
    assert len(rows) == JOBS
