"""Provisioning jobs: enqueue after commit, run (converge the target, verify), record the outcome.

Order of work in a run (house rule 4: no network inside a portal transaction):
1. claim the job in a short transaction (row lock; a finished job is not run again);
2. take a portal-side advisory lock on the target object, so that jobs on the same table never
   overlap across workers (on AWS: on the grantee's source policy, and the desired state is every
   grant in force of the grantee on the source, see services/provisioning_aws.py); read the desired
   state (all grants in force for that principal on that object) *after* taking it, so the last
   job to run always sees the latest truth;
3. converge and verify on the target (its own transaction, with lock and statement timeouts);
4. record the outcome, the grant's new status and the audit event in one portal transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.functions import Now
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome
from notifications.models import Kind as Notice
from notifications.services.outbox import notify

from .. import provisioning
from ..backends import Converges, backend_for, plan_digest
from ..models import (
    DataSource,
    Grant,
    GrantStatus,
    JobAction,
    JobStatus,
    ProvisioningJob,
    RoleMembership,
    SourceHealth,
    SourcePrincipal,
)
from ..provisioners import pg_packages as pgp
from ..provisioners import postgres as pg
from . import jit, provisioning_aws, revocation, source_health
from .leases import HEARTBEAT, lease_expiry
from .locks import object_lock
from .publishing import enqueue, publish_in_order

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class RetryLater(Exception):
    """A transient failure: the task should run the job again after `countdown` seconds. (Not a
    frozen dataclass: raising through a `with` block sets its `__traceback__`.)"""

    countdown: float
    message: str


def provisioning_job_create(*, grant: Grant, action: str, actor: Any = None) -> ProvisioningJob | None:
    """Queue a job for the grant (called inside the service that changed the grant).

    Sources with provisioning disabled (or not PostgreSQL yet) get no job: the grant stays recorded.
    """
    source = grant.dataset.source
    if not source.provisions:
        return None
    job = ProvisioningJob.objects.create(grant=grant, action=action, plan_digest=grant.plan_digest)
    audit.record(
        action="provisioning_job.queued",
        actor=actor,
        target=job,
        metadata={"grant": grant.pk, "action": action, "source": source.name},
    )
    enqueue(job)
    return job


def provisioning_job_retry(*, job: ProvisioningJob, actor: Any) -> ProvisioningJob:
    """Queue a failed job again (admin Retry, API retry): governance admins and security officers."""
    from accounts.roles import operates_provisioning

    from ..errors import ConflictError, NotPermitted
    from .common import refusal_recorded

    with refusal_recorded(action="provisioning_job.retry", actor=actor, target=job), transaction.atomic():
        if actor is not None and not operates_provisioning(actor):
            raise NotPermitted("Only governance admins and security officers retry provisioning jobs.")
        locked = ProvisioningJob.objects.select_for_update().get(pk=job.pk)
        if locked.status != JobStatus.FAILED:
            raise ConflictError(f"Job #{locked.pk} is {locked.status}; only failed jobs can be retried.")
        locked.status = JobStatus.QUEUED
        locked.next_attempt_at = None
        locked.published_at = timezone.now()
        locked.save(update_fields=["status", "next_attempt_at", "published_at"])
        audit.record(action="provisioning_job.retried", actor=actor, target=locked, reason=locked.last_error)
        enqueue(locked)
    return locked


def claimable(now: dt.datetime) -> Q:
    """Which jobs a claim may take: queued and not waiting for its source; or running with its
    lease passed (its worker died). A job another worker is running keeps its lease renewed, so a
    second delivery of the same message (the sweeper, a broker redelivery) never runs it twice at
    once. A running job with no lease was claimed by a worker of the previous version: it is
    presumed dead once it has run longer than a task may (CELERY_TASK_TIME_LIMIT)."""
    legacy = now - dt.timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    return (
        Q(status=JobStatus.QUEUED, waiting_since__isnull=True)
        | Q(status=JobStatus.RUNNING, lease_expires_at__lt=Now())
        | Q(status=JobStatus.RUNNING, lease_expires_at__isnull=True, started_at__lt=legacy)
    )


def _claim(job_id: int) -> ProvisioningJob | None:
    """Mark the job running with a fresh lease (one conditional UPDATE: a finished job is never
    run again, and the row lock it takes is held only for that statement), then load it with what
    the run needs, its source's health included."""
    now = timezone.now()
    claimed = (
        ProvisioningJob.objects.filter(pk=job_id)
        .filter(claimable(now))
        .update(status=JobStatus.RUNNING, attempts=F("attempts") + 1, started_at=now, lease_expires_at=lease_expiry())
    )
    if not claimed:
        if not ProvisioningJob.objects.filter(pk=job_id).exists():
            log.warning("Provisioning job %s does not exist (any more); message dropped.", job_id)
        return None  # missing, finished, waiting for its source, or running elsewhere: nothing to do
    return ProvisioningJob.objects.select_related(
        "grant__dataset__source__health",
        "grant__dataset__classification",
        "grant__grantee_user",
        "grant__grantee_role",
        "membership",
        "source__health",
    ).get(pk=job_id)


def job_source(job: ProvisioningJob) -> DataSource:
    """The data source a job works on (membership jobs name it; grant jobs reach it by the grant)."""
    if job.source is not None:
        return job.source
    assert job.grant is not None
    return job.grant.dataset.source


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
    assert grant is not None  # grant jobs only; membership jobs go to _execute_membership
    # Re-read what may have changed since the claim, now that the per-object lock is held.
    grant.refresh_from_db(fields=["status", "revoked_at", "ends_at"])
    dataset = grant.dataset
    ref = provisioning.grant_principal(grant)
    ref.ensure_free()
    backend = backend_for(dataset.source)
    backend.check_principal(dataset.source, ref)  # e.g. "no IAM identity mapped" before "plan changed"
    job.principal_ref = ref  # type: ignore[attr-defined]  # reused when the outcome is recorded
    if job.action == JobAction.APPLY and grant.plan_digest and plan_digest(grant, ref) != grant.plan_digest:
        raise pg.PermanentError(
            "Plan changed since approval (the dataset's columns, tags or classification changed): re-approval needed."
        )
    # An apply contributes its own grant (its digest was just checked); a revoke contributes nothing.
    in_force = grant.is_in_force()
    including = grant if job.action == JobAction.APPLY and in_force else None
    if backend.converges == Converges.PRINCIPAL_POLICY:
        return provisioning_aws.execute(grant, ref, including=including)
    grants = provisioning.active_grants_for(
        dataset=dataset,
        grantee_user=grant.grantee_user,
        grantee_role=grant.grantee_role,
        including=including,
    )
    # The job's own grant's package is left when no grant in force needs it (a revoke, an end).
    desired = provisioning.desired_for(dataset=dataset, grants=grants, principal=ref.db_role, stale=[grant])
    plan = pgp.plan_converge(desired, managed_principal=ref.managed, database=dataset.source.database)
    target = provisioning.target_for(dataset.source)
    key = provisioning.lock_key(dataset)
    result = apply_and_verify(target, plan, key, after_commit=lambda conn: pgp.verify_check(conn, [desired]).first())
    return list(result.statements), result.elapsed_ms


def apply_and_verify(
    target: pg.Target,
    plan: pg.Plan,
    lock_key: str,
    verify: Callable[[Any], list[str]] | None = None,
    *,
    after_commit: Callable[[Any], pg.Check] | None = None,
) -> pg.ApplyResult:
    """Apply `plan` in one target transaction on a pooled connection, then verify; a verification
    difference is a permanent failure carrying the difference, a lost connection is discarded.
    Used by provisioning jobs and by the reconciler's repairs alike. See `apply_then`."""
    result, problems = apply_then(target, plan, lock_key, verify, after_commit=after_commit)
    if problems:
        raise pg.PermanentError("Verification failed after apply: " + "; ".join(problems))
    return result


def apply_then(
    target: pg.Target,
    plan: pg.Plan,
    lock_key: str,
    check: Callable[[Any], T] | None = None,
    *,
    after_commit: Callable[[Any], pg.Check] | None = None,
) -> tuple[pg.ApplyResult, Any]:
    """Apply `plan` on a pooled connection to `target`, then run `check` on the same connection,
    or `after_commit`'s query in the round trip of the COMMIT (one round trip less: the hot path);
    a connection lost on the way is discarded from the pool."""
    conn = pg.POOL.get(target)
    try:
        result = pg.apply(
            conn,
            plan,
            lock_key=lock_key,
            lock_timeout_ms=settings.TARGET_LOCK_TIMEOUT_MS,
            statement_timeout_ms=settings.TARGET_STATEMENT_TIMEOUT_MS,
            check=after_commit(conn) if after_commit is not None else None,
        )
        return result, (check(conn) if check is not None else result.checked)
    except pg.ProvisioningError as exc:
        if exc.connection_lost:
            pg.POOL.discard(target)
        raise


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, capped (PROVISIONING_RETRY_MAX_SECONDS)."""
    base = settings.PROVISIONING_RETRY_BASE_SECONDS
    cap = settings.PROVISIONING_RETRY_MAX_SECONDS
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))  # noqa: S311 - jitter, not crypto


def _membership_lock_key(job: ProvisioningJob) -> str:
    membership = job.membership
    assert membership is not None
    return json.dumps([job.source_id, "membership", membership.role_id, membership.user_id])


def _execute_membership(job: ProvisioningJob) -> tuple[list[str], float]:
    """Converge `GRANT <role principal> TO <member principal>` on the job's source: present while
    the membership is active, absent once it ended or was removed."""
    assert job.membership_id is not None
    membership = RoleMembership.objects.select_related("role", "user").get(pk=job.membership_id)
    source = job.source
    assert source is not None
    present = RoleMembership.objects.active().filter(pk=membership.pk).exists()
    group = provisioning.principal_for(source=source, role=membership.role)
    member = provisioning.principal_for(source=source, user=membership.user)
    group.ensure_free()
    member.ensure_free()
    parts = []
    if present:
        # No CONNECT of their own: the member inherits it from the group's packages, as it inherits
        # their privileges (docs/provisioning.md, "Access packages").
        parts += [pg.plan_ensure_role(ref.db_role) for ref in (group, member) if ref.managed]
    parts.append(pg.plan_membership(member.db_role, group.db_role, present))
    plan = pg.Plan.combine(parts)
    result = apply_and_verify(
        provisioning.target_for(source),
        plan,
        _membership_lock_key(job),
        lambda conn: pg.verify_membership(conn, member.db_role, group.db_role, present),
    )
    return list(result.statements), result.elapsed_ms


def membership_jobs_create(
    *, membership: RoleMembership, actor: Any = None, sources: Iterable[DataSource] | None = None
) -> list[ProvisioningJob]:
    """Queue the membership's convergence on every source where its role holds active grants
    (called inside the service that changed the membership, or after a role grant was applied)."""
    if sources is None:
        with_grants = (
            Grant.objects.active()
            .filter(grantee_role_id=membership.role_id, status=GrantStatus.ACTIVE)
            .values("dataset__source_id")
        )
        # Wherever this person was ever made a member of the role, even if the role holds nothing
        # there today: a removal must reach those sources, or a later grant would reach them again.
        ever_member = ProvisioningJob.objects.filter(
            action=JobAction.MEMBERSHIP, membership__role_id=membership.role_id, membership__user_id=membership.user_id
        ).values("source_id")
        sources = DataSource.objects.filter(Q(pk__in=with_grants) | Q(pk__in=ever_member))
    jobs = []
    for source in sources:
        if not source.provisions or not backend_for(source).role_membership:
            continue  # e.g. on AWS a portal role is an IAM role: who may assume it is not ours to change
        job = ProvisioningJob.objects.create(membership=membership, source=source, action=JobAction.MEMBERSHIP)
        audit.record(
            action="provisioning_job.queued",
            actor=actor,
            target=job,
            metadata={"membership": membership.pk, "action": JobAction.MEMBERSHIP, "source": source.name},
        )
        enqueue(job)
        jobs.append(job)
    return jobs


def source_unreachable_flag() -> Exists:
    """Annotation for a Grant query: whether its source is marked unreachable right now (read in
    the query that locks the grant anyway, so a success learns it for free)."""
    return Exists(SourceHealth.objects.filter(source_id=OuterRef("dataset__source_id"), reachable=False))


def _grant_succeeded(job: ProvisioningJob, statements: list[str], ref: provisioning.PrincipalRef | None = None) -> bool:
    """Record an apply's or revoke's success on its grant. Returns whether the grant's source is
    marked unreachable (this success proves otherwise: the caller releases it after commit)."""
    assert job.grant_id is not None
    grant = (
        Grant.objects.select_for_update(of=("self",))
        .select_related("dataset__source")
        .annotate(source_unreachable=source_unreachable_flag())
        .get(pk=job.grant_id)
    )
    _ensure_principal_row(grant, ref or provisioning.grant_principal(grant))
    before = grant.status
    finished = job.finished_at or timezone.now()
    grant.verified_at = finished
    in_force = grant.revoked_at is None and grant.ends_at > finished
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
    if grant.status == GrantStatus.ACTIVE and before != GrantStatus.ACTIVE:
        notify(Notice.ACCESS_ACTIVE, grants=[grant.pk])
    if grant.grantee_role_id and grant.status == GrantStatus.ACTIVE and before != GrantStatus.ACTIVE:
        # The role's group role now carries privileges on this source: its members must be in it.
        for membership in RoleMembership.objects.active().filter(role_id=grant.grantee_role_id):
            membership_jobs_create(membership=membership, sources=[grant.dataset.source])
    return bool(grant.source_unreachable)


def provisioning_job_run(*, job_id: int) -> ProvisioningJob | None:
    """Run one job. Raises RetryLater for transient failures the task should retry.

    The per-object lock is held from before the desired state is read until the outcome is
    recorded, so a second job on the same (principal, table) always sees this one's result. While
    the job runs, this process's heartbeat keeps its lease (governance/services/leases.py).
    """
    from .provisioning_batch import provisioning_jobs_run_batch

    # A plain apply takes the batch path as a batch of one: a handful of round trips instead of
    # this path's twenty. Anything that path does not finish (a JIT login, a changed plan, any
    # failure) it leaves queued, and this path runs it now with its precise retry and failure rules.
    batch = provisioning_jobs_run_batch(job_ids=[job_id], publish_handed_back=False)
    if batch.succeeded:
        return ProvisioningJob(pk=job_id, action=JobAction.APPLY, status=JobStatus.SUCCEEDED)
    if batch.parked:
        return ProvisioningJob(pk=job_id, action=JobAction.APPLY, status=JobStatus.QUEUED)
    job = _claim(job_id)
    if job is None:
        return None
    with HEARTBEAT.hold([job.pk]):
        return _run_claimed(job)


def _grant_in_force(job: ProvisioningJob) -> bool:
    """Whether the approval behind an apply still stands (not revoked, not ended)."""
    return Grant.objects.filter(pk=job.grant_id or 0, revoked_at__isnull=True, ends_at__gt=timezone.now()).exists()


def _run_claimed(job: ProvisioningJob) -> ProvisioningJob:
    source = job_source(job)
    # Its source is known not to answer: wait for it without touching it (re-checked under the
    # source's health lock; if it answers after all, run).
    if source_health.known_unreachable(source) and source_health.jobs_park(source_id=source.pk, job_ids=[job.pk]):
        job.status = JobStatus.QUEUED
        return job
    is_membership = job.action == JobAction.MEMBERSHIP
    lock = _membership_lock_key(job) if is_membership else backend_for(source).lock_key(job.grant)  # type: ignore[arg-type]
    started = time.perf_counter()
    error: str = ""
    transient = unreachable = False
    statements: list[str] = []
    target_ms: float | None = None
    with object_lock(lock):
        try:
            login_failed: pg.PermanentError | None = None
            if job.action == JobAction.REVOKE:
                # The temporary login goes first and regardless of the table step: it is a member of
                # the grantee's role and would otherwise keep everything that role holds. If it cannot
                # be dropped for good, the table step still runs; then the job fails with its error.
                try:
                    statements += jit.jit_after_revoke(job=job)
                except pg.PermanentError as exc:
                    login_failed = exc
            done, target_ms = _execute_membership(job) if is_membership else _execute(job)
            statements = done + statements
            if job.action == JobAction.REVOKE and job.grant is not None:
                ref: provisioning.PrincipalRef = job.principal_ref  # type: ignore[attr-defined]
                statements += revocation.grantee_sessions_end(grant=job.grant, principal=ref.db_role, job_id=job.pk)
            if login_failed is not None:
                raise login_failed
            if job.action == JobAction.APPLY:
                statements += jit.jit_after_apply(job=job)  # the grant's JIT login, if it asked for one
        except pg.TransientError as exc:
            error, transient, unreachable = str(exc), True, exc.unreachable
        except pg.PermanentError as exc:
            error = str(exc)
        except Exception as exc:
            # A bug, an undecryptable credential after a key rotation, the portal database failing
            # over: recorded on the job like any failure. Revocations and membership changes keep
            # retrying (access must go away); an apply fails.
            log.exception("Provisioning job %s crashed", job.pk)
            error = f"Unexpected {type(exc).__name__}: {exc}"[:2000]
            transient = job.action in (JobAction.REVOKE, JobAction.MEMBERSHIP)
        # The source did not answer: the job waits for it (no retry spent) and the prober
        # releases it when it answers again; unless it answered in the meantime (retry now).
        if unreachable and source_health.jobs_park(
            source_id=source.pk, job_ids=[job.pk], error=error, attempted_at=job.started_at
        ):
            job.status = JobStatus.QUEUED
            return job
        principal_ref = getattr(job, "principal_ref", None)
        elapsed_ms = (time.perf_counter() - started) * 1000
        # Transient errors never end a job whose work is still wanted: revocations and membership
        # changes (which may be removals) always are, an apply while its approval stands. Past
        # PROVISIONING_MAX_ATTEMPTS the job is flagged as stalled and keeps retrying, at most every
        # PROVISIONING_RETRY_MAX_SECONDS.
        retry = transient and (job.action != JobAction.APPLY or _grant_in_force(job))
        if transient and not retry:
            error = (
                "Stopped retrying: the grant was revoked or ended meanwhile (its revocation converges the "
                f"target). Last error: {error}"
            )[:2000]
        countdown = _backoff(1 if unreachable else job.attempts) if retry else 0.0
        job = _record_outcome(
            job,
            is_membership=is_membership,
            error=error,
            retry=retry,
            countdown=countdown,
            statements=statements,
            duration_ms=target_ms if target_ms is not None else elapsed_ms,
            principal_ref=principal_ref,
        )
    if job.status == JobStatus.FAILED and job.action == JobAction.APPLY:
        jit.jit_after_apply_failed(job=job)  # drop a JIT login role an earlier attempt created
    if getattr(job, "source_was_unreachable", False):
        source_health.source_recovered(source_id=source.pk, via="job")  # it just answered this job
    if retry:
        raise RetryLater(countdown=countdown, message=error)
    return job


def _record_outcome(
    job: ProvisioningJob,
    *,
    is_membership: bool,
    error: str,
    retry: bool,
    countdown: float,
    statements: list[str],
    duration_ms: float,
    principal_ref: provisioning.PrincipalRef | None,
) -> ProvisioningJob:
    """Save the job's outcome, the grant's status and the audit event in one portal transaction."""
    with transaction.atomic():
        job = ProvisioningJob.objects.select_for_update(of=("self",)).select_related("grant").get(pk=job.pk)
        job.duration_ms = duration_ms
        job.finished_at = timezone.now()
        subject = {"membership": job.membership_id} if is_membership else {"grant": job.grant_id}
        source_was_unreachable = False
        if not error:
            job.status = JobStatus.SUCCEEDED
            job.statements = statements
            job.last_error = ""
            if is_membership:
                audit.record(
                    action="role_membership.provisioned",
                    actor=None,
                    target=job,
                    metadata={**subject, "source": job.source_id, "sql": statements, "target_ms": job.duration_ms},
                )
                source_was_unreachable = SourceHealth.objects.filter(source_id=job.source_id, reachable=False).exists()
            else:
                source_was_unreachable = _grant_succeeded(job, statements, principal_ref)
        elif retry:
            job.status = JobStatus.QUEUED
            job.last_error = error
            job.next_attempt_at = job.finished_at + dt.timedelta(seconds=countdown)
            job.published_at = job.next_attempt_at  # the retry's message falls due then (the sweeper's clock)
            audit.record(
                action="provisioning_job.retrying",
                actor=None,
                target=job,
                outcome=Outcome.FAILED,
                reason=error,
                metadata={"attempt": job.attempts, "retry_in_s": round(countdown, 2), **subject},
            )
            if job.attempts == settings.PROVISIONING_MAX_ATTEMPTS:
                # Not a failure (the job keeps retrying), but an operator should look: once per job.
                audit.record(
                    action="provisioning_job.stalled",
                    actor=None,
                    target=job,
                    outcome=Outcome.FAILED,
                    reason=f"Still failing after {job.attempts} attempts; retrying at most every "
                    f"{settings.PROVISIONING_RETRY_MAX_SECONDS:g} s. Last error: {error}",
                    metadata={"action": job.action, "attempt": job.attempts, **subject},
                )
                log.error("Provisioning job %s (%s) stalled after %s attempts: %s", job.pk, job.action,
                          job.attempts, error)  # fmt: skip
        else:
            job.status = JobStatus.FAILED
            job.last_error = error
            audit.record(
                action="provisioning_job.failed",
                actor=None,
                target=job,
                outcome=Outcome.FAILED,
                reason=error,
                metadata={"action": job.action, "attempt": job.attempts, **subject},
            )
            notify(Notice.PROVISIONING_FAILED, job=job.pk, grant=job.grant_id, action=job.action, error=error)
            if job.action == JobAction.APPLY and job.grant is not None:
                Grant.objects.filter(pk=job.grant.pk, status=GrantStatus.APPROVED).update(
                    status=GrantStatus.FAILED, updated_at=job.finished_at
                )
                # The converge may have reached the target before the failure (a JIT step, a
                # verification difference, retries running out): converge the pair back to the
                # grants that are active, so a failed grant never leaves access behind.
                provisioning_job_create(grant=job.grant, action=JobAction.REVOKE)
            else:
                log.error("Provisioning job %s (%s) failed permanently: %s", job.pk, job.action, error)
        job.save()
    job.source_was_unreachable = source_was_unreachable  # type: ignore[attr-defined]
    return job


_SWEEP_SQL = """
WITH due AS (
    SELECT id, status, published_at FROM {job}
    WHERE (status = %(queued)s AND waiting_since IS NULL AND published_at < %(stale)s
           AND (republished_at IS NULL OR republished_at < published_at
                OR republished_at < %(now)s - LEAST(republished_at - published_at + %(stuck)s, %(cap)s)))
       OR (status = %(running)s AND lease_expires_at < now())
       OR (status = %(running)s AND lease_expires_at IS NULL AND started_at < %(legacy)s)
    ORDER BY id
    LIMIT 1000
    FOR UPDATE SKIP LOCKED
)
UPDATE {job} AS j SET
    status = %(queued)s,
    lease_expires_at = NULL,
    published_at = CASE WHEN due.status = %(queued)s THEN j.published_at ELSE %(now)s END,
    republished_at = CASE WHEN due.status = %(queued)s THEN %(now)s ELSE NULL END
FROM due WHERE j.id = due.id
RETURNING j.id, j.action, j.grant_id, j.source_id, due.status, due.published_at
"""


def provisioning_jobs_sweep(*, now: dt.datetime | None = None) -> int:
    """Scheduled every PROVISIONING_SWEEP_INTERVAL_SECONDS: publish again the jobs whose message
    was lost, put back in the queue the jobs whose worker died, release waiting jobs whose source
    answers (a safety net), and raise overdue revocations.

    - A queued job (not waiting for its source) whose message was sent more than
      PROVISIONING_STUCK_AFTER_SECONDS ago: the message was lost (Redis flushed, taken by a worker
      that died before acknowledging it), or the job is behind a legitimate backlog; the sweeper
      cannot tell which, so it sends a duplicate and backs off. `published_at` (the start of the
      job's wait) stays; `republished_at` becomes now, and the next duplicate waits as long as the
      job had already waited plus STUCK_AFTER, at most PROVISIONING_REPUBLISH_MAX_SECONDS: with the
      defaults, duplicates 30, 90, 210, 450, 930 s after publishing, then every 10 minutes. A lost
      message is recovered after ~30 s as before; a job behind a backlog of N minutes costs a few
      duplicates (each is a claim that finds nothing to do, ~3 queries), not 2N, and a revocation
      keeps its place in the queue instead of being sent to the back every 30 s. (Asking the broker
      for its queue depth instead would tie the engine to Redis' list layout, miss messages a worker
      prefetched, and still not tell which job's message was lost.)
    - A running job whose lease passed: its worker stopped renewing it (died). It is queued again
      and published (a new `published_at`, no duplicates yet); the next claim counts a new attempt.

    Re-running is safe: jobs converge, and a claim never takes a job another worker holds. When
    nothing is due this is one UPDATE matching no row plus two small reads.
    """
    now = now or timezone.now()
    stuck = dt.timedelta(seconds=settings.PROVISIONING_STUCK_AFTER_SECONDS)
    params: dict[str, Any] = {
        "queued": JobStatus.QUEUED.value,
        "running": JobStatus.RUNNING.value,
        "stale": now - stuck,
        "stuck": stuck,
        "cap": max(stuck, dt.timedelta(seconds=settings.PROVISIONING_REPUBLISH_MAX_SECONDS)),
        "legacy": now - dt.timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT),
        "now": now,
    }
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute(_SWEEP_SQL.format(job=connection.ops.quote_name(ProvisioningJob._meta.db_table)), params)
            due = cur.fetchall()
        grant_ids = [grant_id for _, _, grant_id, _, _, _ in due if grant_id]
        grants = {
            pk: (jit_role, source_id)
            for pk, jit_role, source_id in Grant.objects.filter(pk__in=grant_ids).values_list(
                "pk", "jit_role", "dataset__source_id"
            )
        } if grant_ids else {}  # fmt: skip
        audit.record_many(
            [
                audit.build(
                    action="provisioning_job.requeued",
                    actor=None,
                    target_type="governance.provisioningjob",
                    target_id=pk,
                    reason="its worker stopped renewing its lease (presumed dead)"
                    if was == JobStatus.RUNNING
                    else f"its message was sent over {int((now - published).total_seconds())} s ago and not taken",
                    metadata={"action": action, "was": was},
                )
                for pk, action, _, _, was, published in due
            ]
        )
        rows = [
            (pk, action, *(grants.get(grant_id, ("", None)) if grant_id else ("", source_id)))
            for pk, action, grant_id, source_id, _, _ in due
        ]
        if rows:
            transaction.on_commit(lambda: publish_in_order(rows))
    source_health.waiting_jobs_release_orphans()
    _raise_overdue_revocations(now)
    return len(due)


def overdue_revocations(now: dt.datetime | None = None) -> Any:
    """Revocations not done REVOCATION_OVERDUE_SECONDS after they were queued: access that should be
    gone is still there. Shown in the admin (Provisioning jobs → overdue) and raised by the sweeper."""
    now = now or timezone.now()
    # Superseded: a job on the same grant *finished* successfully after this revoke was queued. When
    # it was queued matters not: the usual case is a failed apply whose clean-up revoke is stuck, then
    # an operator retries that same apply (provisioning_job_retry keeps its original queued_at, older
    # than the clean-up's) and it succeeds. Every job converges the (principal, object) pair to the
    # grants in force, read under the object lock, so a later success did what this revoke was for:
    # - a revoke: the access is gone;
    # - an apply, while the grant is still in force: access that is there legitimately (the grant was
    #   re-applied on purpose) is not overdue. Once the grant has ended or been revoked, an apply is
    #   never taken as proof: one that read the desired state just before the grant ended could
    #   finish after this revoke was queued, and access that should be gone may still be there.
    later_success = ProvisioningJob.objects.filter(
        grant_id=OuterRef("grant_id"), status=JobStatus.SUCCEEDED, finished_at__gt=OuterRef("queued_at")
    )
    grant_in_force = Exists(Grant.objects.active(now).filter(pk=OuterRef("grant_id")))
    return (
        ProvisioningJob.objects.filter(
            action=JobAction.REVOKE,
            status__in=[JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FAILED],
            queued_at__lt=now - dt.timedelta(seconds=settings.REVOCATION_OVERDUE_SECONDS),
        )
        .exclude(Exists(later_success.filter(action=JobAction.REVOKE)))
        .exclude(Exists(later_success.filter(action=JobAction.APPLY)) & grant_in_force)
    )


def _raise_overdue_revocations(now: dt.datetime) -> None:
    """Log every overdue revocation on every sweep, and put each one in the audit trail once."""
    from audit.models import AuditEvent

    overdue = list(overdue_revocations(now).values_list("pk", "grant_id", "last_error")[:1000])
    if not overdue:
        return
    log.error("%s revocation(s) overdue beyond %ss", len(overdue), settings.REVOCATION_OVERDUE_SECONDS)
    already = set(
        AuditEvent.objects.filter(
            action="provisioning_job.revocation_overdue",
            target_type="governance.provisioningjob",
            target_id__in=[str(pk) for pk, _, _ in overdue],
        ).values_list("target_id", flat=True)
    )
    for pk, grant_id, last_error in overdue:
        if str(pk) in already:
            continue
        with transaction.atomic():
            audit.record(
                action="provisioning_job.revocation_overdue",
                actor=None,
                target_type="governance.provisioningjob",
                target_id=pk,
                target_repr=f"Revoke grant #{grant_id}",
                outcome=Outcome.FAILED,
                reason=f"Access that should have ended is still in place after {settings.REVOCATION_OVERDUE_SECONDS} s."
                + (f" Last error: {last_error}" if last_error else ""),
                metadata={"grant": grant_id},
            )
            notify(
                Notice.REVOCATION_OVERDUE,
                dedup_key=f"revocation_overdue:{pk}",
                job=pk,
                grant=grant_id,
                error=last_error,
            )
