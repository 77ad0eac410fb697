"""Who runs a job, and what a run leaves behind: a job is never run twice at once, object locks never
leak, and settings that would break those promises are refused by `manage.py check`."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from accounts.roles import REQUESTERS
from audit.models import AuditEvent
from governance.checks import provisioning_timeouts
from governance.models import Dataset, DataSource, Grant, GrantStatus, JobStatus, ProvisioningJob
from governance.services.engine.run import provisioning_job_run
from governance.services.locks import object_lock_id, object_locks
from governance.services.requests import access_request_approve, access_request_submit
from tests.db import admin_connection

pytestmark = pytest.mark.django_db(transaction=True)


def unpublished_job(source: DataSource, owner: Any, make_user: Any, name: str) -> ProvisioningJob:
    """An approved grant and its apply job, with no message in the broker (provisioning is off while
    approving, so no worker ever hears of it)."""
    user = make_user(name, REQUESTERS)
    ds = Dataset.objects.get(source=source, schema="finance", name="ledger")
    DataSource.objects.filter(pk=source.pk).update(provisioning_enabled=False)
    req = access_request_submit(requester=user, dataset=ds, justification="audit", duration=dt.timedelta(days=1))
    access_request_approve(access_request=req, approver=owner)
    DataSource.objects.filter(pk=source.pk).update(provisioning_enabled=True)
    grant = Grant.objects.get(source_request=req)
    return ProvisioningJob.objects.create(grant=grant, action="apply", plan_digest=grant.plan_digest)


def test_a_job_running_elsewhere_is_not_run_again_until_its_lease_passes(
    target_source: Any, owner: Any, make_user: Any
) -> None:
    job = unpublished_job(target_source, owner, make_user, "twice")
    # Another worker claimed it a moment ago and holds its lease; a second message for it arrives
    # (sweeper, redelivery). However long it has been running, it is not taken from a live worker.
    ProvisioningJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING,
        attempts=1,
        started_at=timezone.now() - dt.timedelta(hours=1),
        lease_expires_at=timezone.now() + dt.timedelta(seconds=settings.PROVISIONING_LEASE_SECONDS),
    )
    assert provisioning_job_run(job_id=job.pk) is None
    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.RUNNING, 1)
    assert not AuditEvent.objects.filter(action="grant.activated").exists()

    # Its worker died and stopped renewing: past the lease the job is taken over, once.
    ProvisioningJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - dt.timedelta(seconds=1))
    provisioning_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.SUCCEEDED, 2)
    assert Grant.objects.get(pk=job.grant_id or 0).status == GrantStatus.ACTIVE
    assert AuditEvent.objects.filter(action="grant.activated", target_id=str(job.grant_id)).count() == 1


def held_advisory_locks() -> set[int]:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks"
            " WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted"
        )
        return {row[0] for row in cur.fetchall()}


def test_object_locks_are_released_when_taking_them_fails_part_way(db: Any) -> None:
    first, second = "lock-test:a", "lock-test:b"
    ids = sorted([object_lock_id(first), object_lock_id(second)])
    other = admin_connection(settings.DATABASES["default"]["NAME"])
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", [ids[1]])  # the second one is busy
        with connection.cursor() as cur:
            cur.execute("SET statement_timeout = 300")
        with pytest.raises(Exception, match="statement timeout"), object_locks([first, second]):
            pytest.fail("the block must not run without its locks")
        with connection.cursor() as cur:
            cur.execute("RESET statement_timeout")
        assert held_advisory_locks() == set()  # the first one, taken before the wait, is released
    finally:
        other.close()


def test_a_lease_too_short_to_survive_a_slow_renewal_is_refused(settings: Any) -> None:
    settings.PROVISIONING_LEASE_SECONDS = 1
    errors = provisioning_timeouts()
    assert [e.id for e in errors] == ["governance.E001"]
    assert "PROVISIONING_LEASE_SECONDS (1) must be at least 2" in errors[0].msg
    settings.PROVISIONING_LEASE_SECONDS = 20
    assert provisioning_timeouts() == []
