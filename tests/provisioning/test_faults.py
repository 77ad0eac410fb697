"""Faults with real parts: an unreachable target, a worker killed mid-job."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from audit.models import AuditEvent
from governance.models import Dataset, DataSource, Grant, GrantStatus, JobStatus, ProvisioningJob
from governance.provisioning import grant_principal
from governance.services.provisioning import provisioning_job_retry
from governance.services.requests import access_request_approve, access_request_submit
from tests.db import admin_connection as portal_db_connection
from tests.provisioning.conftest import admin_connection, target_can, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]


def submit_and_approve(analyst: Any, owner: Any, source: DataSource, table: str = "ledger") -> Grant:
    ds = Dataset.objects.get(source=source, schema="finance", name=table)
    req = access_request_submit(requester=analyst, dataset=ds, justification="audit", duration=dt.timedelta(days=2))
    access_request_approve(access_request=req, approver=owner)
    return Grant.objects.get(source_request=req)


def test_unreachable_target_retries_then_fails_clearly_then_recovers(target_source, analyst, owner, gov_admin):
    real_port = target_source.port
    DataSource.objects.filter(pk=target_source.pk).update(port=1)  # nothing listens there
    grant = submit_and_approve(analyst, owner, target_source)
    job = wait_for(lambda: ProvisioningJob.objects.filter(grant=grant, status=JobStatus.FAILED).first(), timeout=30)
    assert job.attempts == 3  # PROVISIONING_MAX_ATTEMPTS in the test worker
    assert "connect" in job.last_error.lower() and "password" not in job.last_error.lower()
    assert AuditEvent.objects.filter(action="provisioning_job.retrying", target_id=str(job.pk)).count() == 2
    assert AuditEvent.objects.get(action="provisioning_job.failed").reason == job.last_error
    grant.refresh_from_db()
    assert grant.status == GrantStatus.FAILED

    DataSource.objects.filter(pk=target_source.pk).update(port=real_port)  # the target is back
    provisioning_job_retry(job=job, actor=gov_admin)
    wait_for(lambda: ProvisioningJob.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED, timeout=30)
    grant.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE
    assert target_can(target_source.database, grant_principal(grant).db_role, "SELECT * FROM finance.ledger")


def test_worker_killed_mid_job_applies_exactly_once_after_restart(target_source, analyst, owner, celery_worker):
    """SIGKILL while the job waits on the target: no ack, no cleanup. The sweeper re-enqueues the
    running-too-long job, a new worker converges it, and the privilege is there once."""
    # Hold the per-object lock the job takes before touching the target, from another session of
    # the portal database: the job is claimed (running) and then waits, as a slow target would make it.
    from django.conf import settings

    from governance.provisioning import lock_key
    from governance.services.provisioning import object_lock_id

    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    blocker = portal_db_connection(settings.DATABASES["default"]["NAME"])
    with blocker.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", [object_lock_id(lock_key(ds))])
    try:
        grant = submit_and_approve(analyst, owner, target_source)
        wait_for(lambda: ProvisioningJob.objects.filter(grant=grant, status=JobStatus.RUNNING).exists(), timeout=20)
        celery_worker.kill()
    finally:
        blocker.close()  # releases the advisory lock
    job = ProvisioningJob.objects.get(grant=grant)
    assert job.status == JobStatus.RUNNING  # the dead worker left it there
    celery_worker.start()
    wait_for(lambda: ProvisioningJob.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED, timeout=40)
    grant.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE
    role = grant_principal(grant).db_role
    assert target_can(target_source.database, role, "SELECT * FROM finance.ledger")
    conn = admin_connection(target_source.database)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_class c, aclexplode(c.relacl) a "
            "WHERE c.oid = 'finance.ledger'::regclass AND a.grantee = to_regrole(%s)",
            [role],
        )
        assert cur.fetchone()[0] == 1  # exactly one SELECT entry for the role
    conn.close()
    assert ProvisioningJob.objects.get(pk=job.pk).attempts == 2
    assert AuditEvent.objects.filter(action="grant.activated", target_id=str(grant.pk)).count() == 1


def test_an_unexpected_error_is_recorded_on_the_job_not_left_running(target_source, analyst, owner):
    """E.g. the source's password no longer decrypts after a key rotation: the job fails with the
    reason on it instead of crashing and being re-run by the sweeper forever."""
    good = DataSource.objects.get(pk=target_source.pk).password_encrypted
    DataSource.objects.filter(pk=target_source.pk).update(password_encrypted="not-a-fernet-token")
    grant = submit_and_approve(analyst, owner, target_source)
    job = wait_for(lambda: ProvisioningJob.objects.filter(grant=grant, action="apply", status=JobStatus.FAILED).first())
    assert job.last_error.startswith("Unexpected ImproperlyConfigured")
    assert "not-a-fernet-token" not in job.last_error
    grant.refresh_from_db()
    assert grant.status == GrantStatus.FAILED
    # A clean-up revoke was queued so that nothing the apply may have reached stays behind.
    assert ProvisioningJob.objects.filter(grant=grant, action="revoke").exists()
    # The clean-up keeps retrying (revocations never give up) until the credential is fixed.
    DataSource.objects.filter(pk=target_source.pk).update(password_encrypted=good)
    wait_for(
        lambda: ProvisioningJob.objects.filter(grant=grant, action="revoke", status=JobStatus.SUCCEEDED).exists(),
        timeout=30,
    )
