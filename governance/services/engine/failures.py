"""The one retry and failure policy: what happens to a job that did not succeed, whatever its kind and
whatever the size of the group it ran in.

- **The source did not answer** (`unreachable` on the error): not the job's fault, no retry spent.
  The job waits for its source (services/source_health.py), unless the source was seen answering
  after this attempt began: then it retries at once.
- **Transient** errors (lock or statement timeout, serialization failure, deadlock, throttling)
  retry with exponential backoff and full jitter for as long as the job's work is wanted: a
  revocation or membership change always (it may be a removal), an apply while its grant is not
  revoked and not ended. Past PROVISIONING_MAX_ATTEMPTS the job is flagged stalled once
  (`provisioning_job.stalled`) and keeps retrying, at most every PROVISIONING_RETRY_MAX_SECONDS.
  The retry's message is published, due after the backoff, once the outcome is committed.
- **Permanent** errors (a missing table, permission denied, plan changed, a verification
  difference, no IAM identity mapped) fail the job at once with the target's reason. A failed
  apply fails its grant and queues a clean-up revoke for the same (principal, object), which
  converges it back to the grants that are active; a JIT login an earlier attempt created is
  dropped (after the job's locks are released).
- **Unexpected** exceptions (a bug, a credential that no longer decrypts, the portal database
  failing over) are recorded like any failure: applies fail, revocations and membership changes
  keep retrying.
"""

from __future__ import annotations

import datetime as dt
import logging
import random

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome
from notifications.models import Kind as Notice
from notifications.services.outbox import notify

from ... import dynamic_credentials
from ...models import DataSource, Grant, GrantStatus, JobAction, JobStatus, ProvisioningJob
from ...provisioners import postgres as pg
from ...secrets import SecretUnavailable
from .. import jit, source_health
from ..publishing import retry_later
from .attempt import Attempt
from .jobs import provisioning_job_create

log = logging.getLogger(__name__)


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, capped (PROVISIONING_RETRY_MAX_SECONDS)."""
    base = settings.PROVISIONING_RETRY_BASE_SECONDS
    cap = settings.PROVISIONING_RETRY_MAX_SECONDS
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))  # noqa: S311 - jitter, not crypto


def _classify(job: ProvisioningJob, exc: BaseException) -> tuple[str, bool, bool]:
    """(error text, transient, the source did not answer)."""
    if isinstance(exc, pg.TransientError):
        return str(exc), True, exc.unreachable
    if isinstance(exc, pg.PermanentError):
        return str(exc), False, False
    if isinstance(exc, SecretUnavailable):  # the portal's own login (a secret store, Vault): it may come back
        return str(exc), True, False
    log.error("Provisioning job %s crashed", job.pk, exc_info=exc)
    return (
        f"Unexpected {type(exc).__name__}: {exc}"[:2000],
        job.action in (JobAction.REVOKE, JobAction.MEMBERSHIP),
        False,
    )


def _grant_in_force(job: ProvisioningJob) -> bool:
    """Whether the approval behind an apply still stands (not revoked, not ended)."""
    return Grant.objects.filter(pk=job.grant_id or 0, revoked_at__isnull=True, ends_at__gt=timezone.now()).exists()


def settle(source: DataSource, attempt: Attempt, *, duration_ms: float) -> None:
    """Apply the policy (module docstring) to a job whose `error` is set: it waits, retries or fails."""
    job = attempt.job
    assert attempt.error is not None
    error, transient, unreachable = _classify(job, attempt.error)
    # A leased login the target turned away (revoked in Vault before its TTL): a new lease next time.
    transient = transient or dynamic_credentials.login_refused(source, attempt.error)
    if unreachable and source_health.jobs_park(
        source_id=source.pk, job_ids=[job.pk], error=error, attempted_at=job.started_at
    ):
        job.status = JobStatus.QUEUED
        attempt.outcome = "parked"
        return
    retry = transient and (job.action != JobAction.APPLY or _grant_in_force(job))
    if transient and not retry:
        error = (
            "Stopped retrying: the grant was revoked or ended meanwhile (its revocation converges the "
            f"target). Last error: {error}"
        )[:2000]
    countdown = backoff(1 if unreachable else job.attempts) if retry else 0.0
    _record(job, error=error, retry=retry, countdown=countdown, duration_ms=attempt.target_ms or duration_ms)
    attempt.outcome = "retrying" if retry else "failed"


def _record(job: ProvisioningJob, *, error: str, retry: bool, countdown: float, duration_ms: float) -> None:
    """The job's outcome, its grant's status and the audit events in one portal transaction."""
    subject = {"membership": job.membership_id} if job.membership_id else {"grant": job.grant_id}
    with transaction.atomic():
        job.duration_ms = duration_ms
        job.finished_at = timezone.now()
        job.last_error = error
        fields = ["status", "last_error", "duration_ms", "finished_at"]
        if retry:
            job.status = JobStatus.QUEUED
            job.next_attempt_at = job.finished_at + dt.timedelta(seconds=countdown)
            job.published_at = job.next_attempt_at  # the retry's message falls due then (the sweeper's clock)
            fields += ["next_attempt_at", "published_at"]
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
            job_id = job.pk
            transaction.on_commit(lambda: retry_later(job_id, countdown))
        else:
            job.status = JobStatus.FAILED
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
        ProvisioningJob.objects.filter(pk=job.pk).update(**{name: getattr(job, name) for name in fields})


def after_failed(attempt: Attempt) -> None:
    """Outside the job's locks: an apply that failed drops a JIT login role an earlier attempt
    created (services/jit.py takes the object lock itself)."""
    if attempt.outcome == "failed" and attempt.job.action == JobAction.APPLY:
        jit.jit_after_apply_failed(job=attempt.job)
