"""The sweeper and overdue revocations: finding the work nobody is doing.

Scheduled (beat, every PROVISIONING_SWEEP_INTERVAL_SECONDS): one UPDATE that matches nothing when
all is well. See `provisioning_jobs_sweep` for what it recovers, and docs/provisioning.md.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome
from notifications.models import Kind as Notice
from notifications.services.outbox import notify

from ...models import Grant, JobAction, JobStatus, ProvisioningJob
from .. import source_health
from ..publishing import publish_in_order

log = logging.getLogger(__name__)


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
        with transaction.atomic():  # the audit record and its notification together
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
