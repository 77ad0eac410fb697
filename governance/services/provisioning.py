"""Provisioning jobs: enqueue after commit, run (converge the target, verify), record the outcome.

Order of work in a run (house rule 4: no network inside a portal transaction):
1. claim the job in a short transaction (row lock; a finished job is not run again);
2. take a portal-side advisory lock on the target object, so that jobs on the same table never
   overlap across workers; read the desired state (all grants in force for that principal on that
   object) *after* taking it, so the last job to run always sees the latest truth;
3. converge and verify on the target (its own transaction, with lock and statement timeouts);
4. record the outcome, the grant's new status and the audit event in one portal transaction.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome

from .. import provisioning
from ..models import Grant, GrantStatus, JobAction, JobStatus, ProvisioningJob, SourceKind, SourcePrincipal
from ..provisioners import postgres as pg

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryLater(Exception):
    """A transient failure: the task should run the job again after `countdown` seconds."""

    countdown: float
    message: str


def _enqueue(job: ProvisioningJob) -> None:
    from ..tasks import run_provisioning_job

    transaction.on_commit(lambda: run_provisioning_job.delay(job.pk))


def provisioning_job_create(*, grant: Grant, action: str, actor: Any = None) -> ProvisioningJob | None:
    """Queue a job for the grant (called inside the service that changed the grant).

    Sources with provisioning disabled (or not PostgreSQL yet) get no job: the grant stays recorded.
    """
    source = grant.dataset.source
    if not source.provisioning_enabled or source.kind != SourceKind.POSTGRESQL:
        return None
    job = ProvisioningJob.objects.create(grant=grant, action=action, plan_digest=grant.plan_digest)
    audit.record(
        action="provisioning_job.queued",
        actor=actor,
        target=job,
        metadata={"grant": grant.pk, "action": action, "source": source.name},
    )
    _enqueue(job)
    return job


def provisioning_job_retry(*, job: ProvisioningJob, actor: Any) -> ProvisioningJob:
    """Queue a failed job again (admin Retry)."""
    from ..errors import ConflictError

    with transaction.atomic():
        locked = ProvisioningJob.objects.select_for_update().get(pk=job.pk)
        if locked.status != JobStatus.FAILED:
            raise ConflictError(f"Job #{locked.pk} is {locked.status}; only failed jobs can be retried.")
        locked.status = JobStatus.QUEUED
        locked.next_attempt_at = None
        locked.save(update_fields=["status", "next_attempt_at"])
        audit.record(action="provisioning_job.retried", actor=actor, target=locked, reason=locked.last_error)
        _enqueue(locked)
    return locked


def object_lock_id(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


@contextmanager
def _object_lock(key: str) -> Iterator[None]:
    """Session-level advisory lock on the portal database (held across the target call, outside
    any transaction), released in all cases."""
    lock_id = object_lock_id(key)
    with connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", [lock_id])
    try:
        yield
    finally:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", [lock_id])


def _claim(job_id: int) -> ProvisioningJob | None:
    with transaction.atomic():
        job = (
            ProvisioningJob.objects.select_for_update(of=("self",))
            .select_related("grant__dataset__source", "grant__grantee_user", "grant__grantee_role")
            .filter(pk=job_id)
            .first()
        )
        if job is None:
            log.warning("Provisioning job %s does not exist (any more); message dropped.", job_id)
            return None
        if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            return None  # a duplicate delivery of a finished job: nothing to do
        job.status = JobStatus.RUNNING
        job.attempts += 1
        job.started_at = timezone.now()
        job.save(update_fields=["status", "attempts", "started_at"])
    return job


def _ensure_principal_row(grant: Grant, ref: provisioning.PrincipalRef) -> None:
    if ref.existing is None:
        SourcePrincipal.objects.get_or_create(
            source=grant.dataset.source,
            user=grant.grantee_user,
            role=grant.grantee_role,
            defaults={"db_role": ref.db_role, "managed": ref.managed},
        )


def _execute(job: ProvisioningJob) -> tuple[list[str], float]:
    """Converge the target for the job's (principal, object) and verify. Raises pg errors."""
    grant = job.grant
    dataset = grant.dataset
    if job.action == JobAction.APPLY and grant.plan_digest and provisioning.plan_digest(grant) != grant.plan_digest:
        raise pg.PermanentError(
            "Plan changed since approval (the dataset's columns, tags or classification changed): re-approval needed."
        )
    ref = provisioning.grant_principal(grant)
    # An apply contributes its own grant (its digest was just checked); a revoke contributes nothing.
    in_force = grant.revoked_at is None and grant.starts_at <= timezone.now() < grant.ends_at
    grants = provisioning.active_grants_for(
        dataset=dataset,
        grantee_user=grant.grantee_user,
        grantee_role=grant.grantee_role,
        including=grant if job.action == JobAction.APPLY and in_force else None,
    )
    desired = provisioning.desired_for(dataset=dataset, grants=grants, principal=ref.db_role)
    plan = pg.plan_converge(desired, managed_principal=ref.managed)
    conn = pg.POOL.get(provisioning.target_for(dataset.source))
    try:
        result = pg.apply(
            conn,
            plan,
            lock_key=provisioning.lock_key(dataset),
            lock_timeout_ms=settings.TARGET_LOCK_TIMEOUT_MS,
            statement_timeout_ms=settings.TARGET_STATEMENT_TIMEOUT_MS,
        )
        problems = pg.verify(conn, desired)
    except pg.TransientError as exc:
        if exc.connection_lost:
            pg.POOL.discard(provisioning.target_for(dataset.source))
        raise
    if problems:
        raise pg.PermanentError("Verification failed after apply: " + "; ".join(problems))
    return list(result.statements), result.elapsed_ms


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, capped (PROVISIONING_RETRY_MAX_SECONDS)."""
    base = settings.PROVISIONING_RETRY_BASE_SECONDS
    cap = settings.PROVISIONING_RETRY_MAX_SECONDS
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))  # noqa: S311 - jitter, not crypto


def provisioning_job_run(*, job_id: int) -> ProvisioningJob | None:
    """Run one job. Raises RetryLater for transient failures the task should retry."""
    job = _claim(job_id)
    if job is None:
        return None
    grant = job.grant
    started = time.perf_counter()
    error: str = ""
    transient = False
    statements: list[str] = []
    target_ms: float | None = None
    with _object_lock(provisioning.lock_key(grant.dataset)):
        try:
            statements, target_ms = _execute(job)
        except pg.TransientError as exc:
            error, transient = str(exc), True
        except pg.PermanentError as exc:
            error = str(exc)
    elapsed_ms = (time.perf_counter() - started) * 1000

    # Revocations never give up on transient errors; applies stop after PROVISIONING_MAX_ATTEMPTS.
    retry = transient and (job.action == JobAction.REVOKE or job.attempts < settings.PROVISIONING_MAX_ATTEMPTS)
    countdown = _backoff(job.attempts) if retry else 0.0
    with transaction.atomic():
        job = ProvisioningJob.objects.select_for_update(of=("self",)).select_related("grant").get(pk=job.pk)
        grant = Grant.objects.select_for_update(of=("self",)).select_related("dataset__source").get(pk=job.grant_id)
        job.duration_ms = target_ms if target_ms is not None else elapsed_ms
        job.finished_at = timezone.now()
        if not error:
            job.status = JobStatus.SUCCEEDED
            job.statements = statements
            job.last_error = ""
            _ensure_principal_row(grant, provisioning.grant_principal(grant))
            before = grant.status
            grant.verified_at = job.finished_at
            in_force = grant.revoked_at is None and grant.ends_at > job.finished_at
            if job.action == JobAction.APPLY and in_force:
                grant.status = GrantStatus.ACTIVE
            grant.save(update_fields=["status", "verified_at", "updated_at"])
            audit.record(
                action=f"grant.{'activated' if job.action == JobAction.APPLY else 'revocation_verified'}",
                actor=None,
                target=grant,
                changes={"status": [before, grant.status]} if before != grant.status else {},
                metadata={"job": job.pk, "attempt": job.attempts, "target_ms": job.duration_ms, "sql": statements},
            )
        elif retry:
            job.status = JobStatus.QUEUED
            job.last_error = error
            job.next_attempt_at = job.finished_at + dt.timedelta(seconds=countdown)
            audit.record(
                action="provisioning_job.retrying",
                actor=None,
                target=job,
                outcome=Outcome.FAILED,
                reason=error,
                metadata={"attempt": job.attempts, "retry_in_s": round(countdown, 2)},
            )
        else:
            job.status = JobStatus.FAILED
            job.last_error = error
            if job.action == JobAction.APPLY and grant.status == GrantStatus.APPROVED:
                grant.status = GrantStatus.FAILED
                grant.save(update_fields=["status", "updated_at"])
            audit.record(
                action="provisioning_job.failed",
                actor=None,
                target=job,
                outcome=Outcome.FAILED,
                reason=error,
                metadata={"grant": grant.pk, "action": job.action, "attempt": job.attempts},
            )
            if job.action == JobAction.REVOKE:
                log.error("Revocation of grant %s failed permanently: %s", grant.pk, error)
        job.save()
    if retry:
        raise RetryLater(countdown=countdown, message=error)
    return job


def provisioning_jobs_sweep(*, now: dt.datetime | None = None) -> int:
    """Re-enqueue jobs stuck in queued/running beyond PROVISIONING_STUCK_AFTER_SECONDS.

    A job is stuck when its message was lost (Redis flushed, broker restarted) or its worker died
    mid-run. Re-running is safe: jobs converge. Overdue revocations are also raised loudly.
    """
    from ..tasks import run_provisioning_job

    now = now or timezone.now()
    stale = now - dt.timedelta(seconds=settings.PROVISIONING_STUCK_AFTER_SECONDS)
    stuck = list(
        ProvisioningJob.objects.filter(status__in=[JobStatus.QUEUED, JobStatus.RUNNING])
        .filter(
            # queued and due (its retry time passed, or it never had one and is old), or running too long
            models_q_stuck(stale, now)
        )
        .values_list("pk", flat=True)[:1000]
    )
    for pk in stuck:
        audit.record(
            action="provisioning_job.requeued", actor=None, target_type="governance.provisioningjob", target_id=pk
        )
        run_provisioning_job.delay(pk)
    overdue = ProvisioningJob.objects.filter(
        action=JobAction.REVOKE,
        status__in=[JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FAILED],
        queued_at__lt=now - dt.timedelta(seconds=settings.REVOCATION_OVERDUE_SECONDS),
    ).count()
    if overdue:
        log.error("%s revocation(s) overdue beyond %ss", overdue, settings.REVOCATION_OVERDUE_SECONDS)
    return len(stuck)


def models_q_stuck(stale: dt.datetime, now: dt.datetime) -> Any:
    from django.db.models import Q

    queued_due = Q(status=JobStatus.QUEUED) & (
        Q(next_attempt_at__lt=stale) | Q(next_attempt_at__isnull=True, queued_at__lt=stale)
    )
    running_long = Q(status=JobStatus.RUNNING, started_at__lt=stale)
    return queued_due | running_long
