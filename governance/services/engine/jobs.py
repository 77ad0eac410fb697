"""Queueing provisioning jobs: what the services that change grants and memberships call, inside
their transaction; each job is published once that transaction commits (services/publishing.py)
and run by the engine (run.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import Q

from audit import services as audit

from ...backends import backend_for
from ...models import (
    UNPROVISIONED_LEVELS,
    DataSource,
    Grant,
    GrantStatus,
    JobAction,
    JobStatus,
    ProvisioningJob,
    RoleMembership,
)
from ..publishing import enqueue, first_publication


def provisioning_job_create(*, grant: Grant, action: str, actor: Any = None) -> ProvisioningJob | None:
    """Queue a job for the grant (called inside the service that changed the grant).

    Sources with provisioning disabled (or not PostgreSQL yet) get no job: the grant stays recorded.
    Neither do levels that hold no database privilege (aggregate access, docs/privacy.md).
    """
    source = grant.dataset.source
    if not source.provisions or grant.level in UNPROVISIONED_LEVELS:
        return None
    job = ProvisioningJob.objects.create(
        grant=grant, action=action, plan_digest=grant.plan_digest, published_at=first_publication()
    )
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

    from ...errors import ConflictError, NotPermitted
    from ..common import refusal_recorded

    with refusal_recorded(action="provisioning_job.retry", actor=actor, target=job), transaction.atomic():
        if actor is not None and not operates_provisioning(actor):
            raise NotPermitted("Only governance admins and security officers retry provisioning jobs.")
        locked = ProvisioningJob.objects.select_for_update().get(pk=job.pk)
        if locked.status != JobStatus.FAILED:
            raise ConflictError(f"Job #{locked.pk} is {locked.status}; only failed jobs can be retried.")
        locked.status = JobStatus.QUEUED
        locked.next_attempt_at = None
        locked.published_at = first_publication()
        locked.save(update_fields=["status", "next_attempt_at", "published_at"])
        audit.record(action="provisioning_job.retried", actor=actor, target=locked, reason=locked.last_error)
        enqueue(locked)
    return locked


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
        job = ProvisioningJob.objects.create(
            membership=membership, source=source, action=JobAction.MEMBERSHIP, published_at=first_publication()
        )
        audit.record(
            action="provisioning_job.queued",
            actor=actor,
            target=job,
            metadata={"membership": membership.pk, "action": JobAction.MEMBERSHIP, "source": source.name},
        )
        enqueue(job)
        jobs.append(job)
    return jobs
