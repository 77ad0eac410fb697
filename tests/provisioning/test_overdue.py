"""A revocation that is not done in time is raised: in the log, once in the audit trail, in the admin."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditEvent
from governance.models import Grant, JobAction, JobStatus, ProvisioningJob
from governance.services.engine.sweep import provisioning_jobs_sweep

pytestmark = pytest.mark.django_db


def test_overdue_revocation_is_raised_once_and_listed(settings, superuser, analyst, make_dataset, caplog):
    settings.REVOCATION_OVERDUE_SECONDS = 600
    ds = make_dataset("ledger")
    now = timezone.now()
    grant = Grant.objects.create(
        grantee_user=analyst, dataset=ds, level="read", starts_at=now - dt.timedelta(days=2), ends_at=now
    )
    job = ProvisioningJob.objects.create(
        grant=grant, action=JobAction.REVOKE, status=JobStatus.FAILED, last_error="target unreachable"
    )
    ProvisioningJob.objects.filter(pk=job.pk).update(queued_at=now - dt.timedelta(hours=1))
    with caplog.at_level("ERROR"):
        provisioning_jobs_sweep()
        provisioning_jobs_sweep()
    assert "overdue" in caplog.text
    event = AuditEvent.objects.get(action="provisioning_job.revocation_overdue")  # once, not per sweep
    assert event.outcome == "failed" and "target unreachable" in event.reason

    client = Client()
    client.force_login(superuser)
    page = client.get(reverse("admin:governance_provisioningjob_changelist") + "?overdue=revocations")
    assert page.status_code == 200 and f"#{grant.pk} read" in page.content.decode()


def test_a_cleanup_revoke_superseded_by_a_later_successful_apply_is_not_overdue(settings, analyst, make_dataset):
    """A failed apply queues a clean-up revoke; when that clean-up is stuck (target down) and the
    grant is later applied successfully (a retry), access is there legitimately: the old clean-up
    must not raise "revocation overdue" on every sweep."""
    from governance.services.engine.sweep import overdue_revocations

    settings.REVOCATION_OVERDUE_SECONDS = 600
    ds = make_dataset("ledger")
    now = timezone.now()
    grant = Grant.objects.create(
        grantee_user=analyst,
        dataset=ds,
        level="read",
        starts_at=now - dt.timedelta(hours=3),
        ends_at=now + dt.timedelta(days=1),
    )
    cleanup = ProvisioningJob.objects.create(grant=grant, action=JobAction.REVOKE, status=JobStatus.FAILED)
    ProvisioningJob.objects.filter(pk=cleanup.pk).update(queued_at=now - dt.timedelta(hours=2))
    assert list(overdue_revocations()) == [cleanup]
    retried = ProvisioningJob.objects.create(grant=grant, action=JobAction.APPLY, status=JobStatus.SUCCEEDED)
    jobs = ProvisioningJob.objects.filter(pk=retried.pk)
    jobs.update(queued_at=now - dt.timedelta(hours=1), finished_at=now - dt.timedelta(hours=1))
    assert list(overdue_revocations()) == []
    # An apply that succeeded before the clean-up was queued is what the clean-up undoes, not proof.
    jobs.update(finished_at=now - dt.timedelta(hours=2, minutes=1))
    assert list(overdue_revocations()) == [cleanup]
    jobs.update(finished_at=now - dt.timedelta(hours=1))
    # Once the grant has ended, an apply proves nothing (access that should be gone may be there)...
    Grant.objects.filter(pk=grant.pk).update(ends_at=now - dt.timedelta(minutes=1))
    assert list(overdue_revocations()) == [cleanup]
    # ... but a later revoke that succeeded does: the access is gone.
    done = ProvisioningJob.objects.create(grant=grant, action=JobAction.REVOKE, status=JobStatus.SUCCEEDED)
    ProvisioningJob.objects.filter(pk=done.pk).update(finished_at=now - dt.timedelta(minutes=1))
    assert list(overdue_revocations()) == []
    done.delete()
    Grant.objects.filter(pk=grant.pk).update(ends_at=now + dt.timedelta(days=1))
    # A later apply that has not succeeded does not supersede anything.
    jobs.update(status=JobStatus.FAILED)
    assert list(overdue_revocations()) == [cleanup]
    provisioning_jobs_sweep()
    assert AuditEvent.objects.filter(action="provisioning_job.revocation_overdue").count() == 1


def test_review_a_cleanup_revoke_is_not_overdue_after_the_failed_apply_itself_is_retried_and_succeeds(
    settings, analyst, gov_admin, make_dataset
):
    """Review finding: the real flow of issue 13 item 4 is apply fails -> clean-up revoke queued ->
    an operator retries *the same* apply job (provisioning_job_retry) -> it succeeds. The retried job
    keeps its original queued_at (older than the clean-up's), so `later_success` never matches."""
    from governance.services.engine.jobs import provisioning_job_retry
    from governance.services.engine.sweep import overdue_revocations

    settings.REVOCATION_OVERDUE_SECONDS = 600
    ds = make_dataset("ledger")
    now = timezone.now()
    grant = Grant.objects.create(
        grantee_user=analyst,
        dataset=ds,
        level="read",
        starts_at=now - dt.timedelta(hours=3),
        ends_at=now + dt.timedelta(days=1),
    )
    apply = ProvisioningJob.objects.create(grant=grant, action=JobAction.APPLY, status=JobStatus.FAILED)
    ProvisioningJob.objects.filter(pk=apply.pk).update(queued_at=now - dt.timedelta(hours=3))
    cleanup = ProvisioningJob.objects.create(grant=grant, action=JobAction.REVOKE, status=JobStatus.QUEUED)
    ProvisioningJob.objects.filter(pk=cleanup.pk).update(queued_at=now - dt.timedelta(hours=2))
    provisioning_job_retry(job=apply, actor=gov_admin)  # what the admin's Retry action does
    ProvisioningJob.objects.filter(pk=apply.pk).update(status=JobStatus.SUCCEEDED, finished_at=timezone.now())
    assert list(overdue_revocations()) == []
