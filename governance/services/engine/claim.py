"""Claiming jobs: one statement marks them running with a fresh lease, one query per kind of subject
loads what the run needs. The same claim for one job and for a batch of five hundred."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils import timezone

from ...models import DataSource, Grant, JobStatus, ProvisioningJob, RoleMembership
from .attempt import Attempt

log = logging.getLogger(__name__)

# Which jobs a claim may take: queued and not waiting for its source; or running with its lease
# passed (its worker died). A job another worker is running keeps its lease renewed, so a second
# delivery of the same message (the sweeper, a broker redelivery) never runs it twice at once. A
# running job with no lease was claimed by a worker of the previous version: it is presumed dead
# once it has run longer than a task may (CELERY_TASK_TIME_LIMIT). Rows another claim holds locked
# at this instant are skipped (SKIP LOCKED): that claim takes them.
_CLAIM_SQL = """
WITH picked AS (
    SELECT id FROM {job}
    WHERE id = ANY(%(ids)s)
      AND ((status = %(queued)s AND waiting_since IS NULL)
           OR (status = %(running)s AND lease_expires_at < now())
           OR (status = %(running)s AND lease_expires_at IS NULL AND started_at < %(legacy)s))
    ORDER BY id
    FOR UPDATE SKIP LOCKED
)
UPDATE {job} AS j SET status = %(running)s, attempts = j.attempts + 1, started_at = %(now)s,
    lease_expires_at = now() + make_interval(secs => %(lease)s)
FROM picked WHERE j.id = picked.id
RETURNING j.id, j.action, j.attempts, j.grant_id, j.membership_id, j.source_id
"""


def claim(job_ids: list[int]) -> list[Attempt]:
    """Mark the jobs running with a fresh lease (the database's clock: see leases.py) in one
    statement that commits on its own, then load them: their grants with dataset, source (and its
    health: a job of a source known not to answer waits without touching it), classification and
    grantee in one query; membership jobs' memberships and sources in two more, only when there
    are some. Jobs missing, finished, waiting for their source or running elsewhere are left out."""
    ids = sorted(set(job_ids))
    now = timezone.now()
    params: dict[str, Any] = {
        "ids": ids,
        "queued": JobStatus.QUEUED.value,
        "running": JobStatus.RUNNING.value,
        "legacy": now - dt.timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT),
        "lease": float(settings.PROVISIONING_LEASE_SECONDS),
        "now": now,
    }
    with connection.cursor() as cur:
        cur.execute(_CLAIM_SQL.format(job=connection.ops.quote_name(ProvisioningJob._meta.db_table)), params)
        claimed = sorted(cur.fetchall())
    if len(claimed) < len(ids):
        _warn_missing(set(ids) - {row[0] for row in claimed})
    if not claimed:
        return []
    grant_ids = [grant_id for _, _, _, grant_id, _, _ in claimed if grant_id]
    membership_ids = [mid for _, _, _, _, mid, _ in claimed if mid]
    grants = (
        Grant.objects.select_related(
            "dataset__source__health", "dataset__classification", "grantee_user", "grantee_role"
        ).in_bulk(grant_ids)
        if grant_ids
        else {}
    )
    memberships = (
        RoleMembership.objects.select_related("role", "user").in_bulk(membership_ids) if membership_ids else {}
    )
    source_ids = {sid for _, _, _, _, mid, sid in claimed if mid and sid}
    sources = DataSource.objects.select_related("health").in_bulk(source_ids) if source_ids else {}
    return [
        Attempt(
            ProvisioningJob(
                pk=pk,
                action=action,
                status=JobStatus.RUNNING,
                attempts=attempts,
                started_at=now,
                grant=grants[grant_id] if grant_id else None,
                membership=memberships[mid] if mid else None,
                source=sources[sid] if mid and sid else None,
            )
        )
        for pk, action, attempts, grant_id, mid, sid in claimed
    ]


def _warn_missing(unclaimed: set[int]) -> None:
    """A message for a job that does not exist (any more) is dropped with a warning; the others
    not claimed are finished, waiting or running elsewhere: nothing to do, nothing to say."""
    gone = unclaimed - set(ProvisioningJob.objects.filter(pk__in=unclaimed).values_list("pk", flat=True))
    for pk in sorted(gone):
        log.warning("Provisioning job %s does not exist (any more); message dropped.", pk)
