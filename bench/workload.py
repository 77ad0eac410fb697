"""What the benchmarks that drive real workers share: a worker with production settings, approved
grants made in bulk (with their plan digests and queued jobs), publishing and waiting for them, the
checks that every one of them was applied, and dropping target roles afterwards.

Used by bench_bulk.py, bench_one_table.py, bench_stress.py and bench_reconcile.py; the
`production_worker` fixture is in bench/conftest.py.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.db.models import Count, F, Model
from django.utils import timezone
from psycopg2 import sql

from accounts.models import User
from audit.models import AuditEvent
from governance import backends, provisioning
from governance.models import (
    AccessLevel,
    Dataset,
    DataSource,
    Grant,
    GrantStatus,
    JobAction,
    JobStatus,
    ProvisioningJob,
)
from governance.services.publishing import publish
from tests import tls_target
from tests.provisioning.conftest import ROOT, RUN, Worker

UNUSABLE = "!"  # an unusable password hash: these users never sign in
# Test-fixture overrides dropped so that the settings' production defaults apply (sweeper every
# 5 s: a message re-sent after 30 s, a dead worker's job after its 20 s lease; 1 s backoff base;
# source probes every 2 s; 5 s target lock timeout).
PRODUCTION_DEFAULTS = (
    "PROVISIONING_RETRY_BASE_SECONDS",
    "PROVISIONING_RETRY_MAX_SECONDS",
    "PROVISIONING_MAX_ATTEMPTS",
    "GRANT_EXPIRY_INTERVAL_SECONDS",
    "PROVISIONING_SWEEP_INTERVAL_SECONDS",
    "PROVISIONING_STUCK_AFTER_SECONDS",
    "PROVISIONING_LEASE_SECONDS",
    "PROVISIONING_PROBE_INTERVAL_SECONDS",
    "PROVISIONING_PROBE_TIMEOUT_SECONDS",
    "TARGET_LOCK_TIMEOUT_MS",
)
UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING)


class NamedWorker(Worker):
    """The fixture's worker with a node name unique per instance (the base class numbers its starts
    only, so two instances would both be `test<run>-1@host`), beat optional (one beat per cluster),
    and production sweeper/retry settings."""

    def __init__(self, log_dir: Path, name: str, *, beat: bool) -> None:
        super().__init__(log_dir)
        self.name = name
        self.beat = beat

    def env(self) -> dict[str, str]:
        env = super().env()
        for key in PRODUCTION_DEFAULTS:
            env.pop(key, None)
        return env

    def start(self) -> None:
        self.starts += 1
        self.log_path = self.log_dir / f"worker-{self.name}-{self.starts}.log"
        argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "--loglevel=INFO"]
        argv += ["-n", f"stress{RUN}-{self.name}-{self.starts}@%h"]
        if self.beat:
            argv += ["--beat", "-s", str(self.log_dir / f"beat-schedule-{self.name}")]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter running celery
                argv, cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if b"ready." in self.log_path.read_bytes():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited at start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError("celery worker did not become ready in 30 s")

    def tasks_done(self) -> int:
        """Provisioning tasks this worker finished (its log's `succeeded in` lines)."""
        text = self.log_path.read_text(errors="replace")
        return sum(1 for line in text.splitlines() if "run_provisioning_job[" in line and "succeeded in" in line)


def approved_read_grants(
    source: DataSource, usernames: Iterable[str], datasets: list[Dataset]
) -> list[tuple[int, int | None]]:
    """A new user per name, each with an approved (not yet applied) read grant on every dataset,
    its plan digest as the approval computed it, and its queued job; made in bulk, nothing
    published. Returns the jobs as `publish()` takes them (job id, source id: batchable)."""
    users = User.objects.bulk_create([User(username=name, password=UNUSABLE) for name in usernames])
    facts = provisioning.dataset_facts([ds.pk for ds in datasets])
    now = timezone.now()
    grants = []
    for user in users:
        principal = provisioning.PrincipalRef(
            db_role=provisioning.managed_role_name(source, "u", user.username), managed=True, existing=None
        )
        for ds in datasets:
            grant = Grant(
                grantee_user=user,
                dataset=ds,
                level=AccessLevel.READ,
                status=GrantStatus.APPROVED,
                starts_at=now,
                ends_at=now + dt.timedelta(days=30),
                reason="bench",
            )
            grant.plan_digest = backends.plan_digest(grant, principal, facts[ds.pk])
            grants.append(grant)
    Grant.objects.bulk_create(grants, batch_size=2_000)
    jobs = ProvisioningJob.objects.bulk_create(
        [ProvisioningJob(grant=g, action=JobAction.APPLY, plan_digest=g.plan_digest) for g in grants],
        batch_size=2_000,
    )
    analyze(User, Grant, ProvisioningJob)
    return [(job.pk, source.pk) for job in jobs]


def analyze(*models: type[Model]) -> None:
    """ANALYZE the tables a benchmark just filled in bulk, as autovacuum would soon after in
    production (the test server runs without it). Without statistics PostgreSQL plans for the
    empty tables it last saw: e.g. reconcile's read of 100,000 grants became a nested loop over a
    bitmap of every grant per dataset, 33 s instead of well under one."""
    tables = ", ".join(connection.ops.quote_name(model._meta.db_table) for model in models)
    with connection.cursor() as cur:
        cur.execute(f"ANALYZE {tables}")


def publish_and_wait(
    entries: list[tuple[int, int | None]], deadline_s: float, *, stop_at_failure: bool = False
) -> float:
    """Publish the jobs as one bulk commit does and wait until none is queued or running (or, with
    `stop_at_failure`, until one has failed: the run is a failure then, the rest need not be
    awaited); seconds from publishing to then. Fails after `deadline_s` with the jobs' statuses."""
    ids = [pk for pk, _ in entries]
    jobs = ProvisioningJob.objects.filter(pk__in=ids)
    started = time.perf_counter()
    publish(entries)
    while jobs.filter(status__in=UNFINISHED).exists():
        if stop_at_failure and jobs.filter(status=JobStatus.FAILED).exists():
            break
        if time.perf_counter() - started > deadline_s:
            raise AssertionError(f"jobs unfinished after {deadline_s:.0f} s: {job_statuses(ids)}")
        time.sleep(0.05)
    return time.perf_counter() - started


def abandon_unfinished(worker: Worker, ids: list[int]) -> int:
    """Stop `worker`, empty the queue and mark the jobs not finished yet failed (never run), so that
    no worker (the session's, restarted afterwards) spends minutes on them. Returns how many."""
    worker.stop()
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    return ProvisioningJob.objects.filter(pk__in=ids, status__in=UNFINISHED).update(
        status=JobStatus.FAILED, last_error="not run: the benchmark stopped at the first failed job"
    )


def job_statuses(ids: list[int]) -> dict[str, int]:
    return dict(ProvisioningJob.objects.filter(pk__in=ids).values_list("status").annotate(n=Count("pk")))


def first_error(ids: list[int]) -> str:
    """The error of the first job that failed (ran and failed, before any marked by
    `abandon_unfinished`), or ''."""
    failed = ProvisioningJob.objects.filter(pk__in=ids, status=JobStatus.FAILED)
    failed = failed.order_by(F("finished_at").asc(nulls_last=True), "pk")
    return failed.values_list("last_error", flat=True).first() or ""


def assert_all_applied(ids: list[int]) -> None:
    """Every job succeeded at its first attempt in a batch; every grant is Active and verified,
    with one `grant.activated` audit event from a batch."""
    n = len(ids)
    statuses = job_statuses(ids)
    assert statuses == {JobStatus.SUCCEEDED: n}, (statuses, first_error(ids))
    grants = Grant.objects.filter(jobs__pk__in=ids)
    assert grants.filter(status=GrantStatus.ACTIVE, verified_at__isnull=False).count() == n
    batched = ProvisioningJob.objects.filter(pk__in=ids, attempts=1).count()
    assert batched == n  # each job ran once: no retry, no re-publish, no hand-back
    activated = AuditEvent.objects.filter(action="grant.activated", metadata__has_key="batch").count()
    assert activated == n  # one audit event per grant, all from batches


def batch_times() -> list[tuple[float, float]]:
    """(whole batch ms, target transaction ms) of each batch that activated grants, in the order they
    ran, from the ``batch`` each grant's audit event records (one per batch: the same figures on
    every event of the batch, so one event per batch is read)."""
    rows = (
        AuditEvent.objects.filter(action="grant.activated", metadata__has_key="batch")
        .order_by("metadata__job")
        .values_list("metadata__batch__ms", "metadata__batch__target_ms", "metadata__job")
    )
    out: list[tuple[float, float]] = []
    last: tuple[float, float] | None = None
    for ms, target_ms, _job in rows.iterator(chunk_size=5_000):
        key = (float(ms), float(target_ms))
        if key != last:
            out.append(key)
            last = key
    return out


def describe_batches(times: list[tuple[float, float]], ends: int = 3) -> str:
    """'portal ms / target ms' of the first and last ``ends`` batches, and the means."""
    if not times:
        return "no batch"
    fmt = ", ".join
    first = fmt(f"{ms:.0f}/{target:.0f}" for ms, target in times[:ends])
    last = fmt(f"{ms:.0f}/{target:.0f}" for ms, target in times[-ends:])
    mean_ms = sum(ms for ms, _ in times) / len(times)
    mean_target = sum(target for _, target in times) / len(times)
    return f"{len(times)} batches, whole/target ms: first {first}; last {last}; mean {mean_ms:.0f}/{mean_target:.0f}"


def drop_roles(conn: Any, roles: list[str], chunk: int = 500) -> None:
    """Drop those of `roles` that exist on the target (`conn`: a superuser session in the governed
    database), a few hundred per statement. What the portal's role granted them (CONNECT on the
    database) only that role can revoke; drop their objects (and what else they hold) before."""
    database = sql.Identifier(conn.info.dbname)
    with conn.cursor() as cur:
        cur.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname", [roles])
        present = [row[0] for row in cur.fetchall()]
        for first in range(0, len(present), chunk):
            names = sql.SQL(", ").join(sql.Identifier(role) for role in present[first : first + chunk])
            cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(tls_target.PORTAL_ROLE)))
            cur.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {} CASCADE").format(database, names))
            cur.execute("RESET ROLE")
            cur.execute(sql.SQL("DROP OWNED BY {}").format(names))
            cur.execute(sql.SQL("DROP ROLE {}").format(names))
