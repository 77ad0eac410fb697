"""Approved access becomes real PostgreSQL privileges through a real worker, and goes away again."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import redis
from django.conf import settings
from django.utils import timezone

from audit.models import AuditEvent
from governance.models import ColumnTag, Dataset, Grant, GrantStatus, JobStatus, ProvisioningJob, TagStatus
from governance.provisioning import grant_principal
from governance.services.catalog import column_tag_confirm, dataset_update
from governance.services.grants import grant_revoke
from governance.services.requests import access_request_approve, access_request_submit
from tests.provisioning.conftest import target_can, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]
DAYS = dt.timedelta(days=1)


def dataset(source: Any, schema: str, name: str) -> Dataset:
    return Dataset.objects.get(source=source, schema=schema, name=name)


def approve_read(analyst: Any, owner: Any, ds: Dataset, **kw: Any) -> Grant:
    kw.setdefault("duration", 7 * DAYS)
    req = access_request_submit(requester=analyst, dataset=ds, justification="month-end close", **kw)
    access_request_approve(access_request=req, approver=owner)
    return Grant.objects.get(source_request=req)


def status_of(grant: Grant) -> str:
    grant.refresh_from_db()
    return grant.status


def test_approval_becomes_real_select_and_revoke_takes_it_away(target_source, analyst, owner):
    from audit import context

    ds = dataset(target_source, "finance", "ledger")
    with context.bind(context.RequestContext(request_id="approval-click-1", source="admin")):
        grant = approve_read(analyst, owner, ds)
    wait_for(lambda: status_of(grant) == GrantStatus.ACTIVE)
    role = grant_principal(grant).db_role
    db = target_source.database
    assert target_can(db, role, "SELECT * FROM finance.ledger")
    assert not target_can(db, role, "UPDATE finance.ledger SET amount = 0")
    job = ProvisioningJob.objects.get(grant=grant)
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 1
    assert any("GRANT SELECT ON TABLE" in s for s in job.statements)
    activated = AuditEvent.objects.get(action="grant.activated")
    assert activated.changes == {"status": ["approved", "active"]} and activated.source == "task"
    # The worker's event carries the request id of the approval that caused it.
    assert AuditEvent.objects.get(action="access_request.approved").request_id == "approval-click-1"
    assert activated.request_id == "approval-click-1"

    grant_revoke(grant=grant, actor=owner, reason="close done")
    wait_for(lambda: ProvisioningJob.objects.filter(grant=grant, action="revoke", status=JobStatus.SUCCEEDED).exists())
    assert not target_can(db, role, "SELECT * FROM finance.ledger")
    assert AuditEvent.objects.filter(action="grant.revocation_verified").count() == 1


def test_pii_columns_left_out_unless_requested(target_source, analyst, owner, gov_admin, classifications):
    ds = dataset(target_source, "Sales EU", "customers")
    for tag in ColumnTag.objects.filter(column__dataset=ds, column__name="email"):
        column_tag_confirm(tag=tag, actor=owner)
    if not ColumnTag.objects.filter(column__dataset=ds, column__name="email", status=TagStatus.CONFIRMED).exists():
        from governance.services.catalog import column_tag_add

        column_tag_add(column=ds.columns.get(name="email"), tag="email", actor=owner)
    dataset_update(dataset=ds, actor=gov_admin, classification=classifications["restricted"])
    from django.contrib.auth.models import Group

    from accounts.models import User
    from accounts.roles import SECURITY_OFFICERS

    officer = User.objects.create_user("officer2", password="x" * 20)
    officer.groups.add(Group.objects.get(name=SECURITY_OFFICERS))
    req = access_request_submit(requester=analyst, dataset=ds, justification="churn model", duration=3 * DAYS)
    access_request_approve(access_request=req, approver=owner)
    access_request_approve(access_request=req, approver=officer)
    grant = Grant.objects.get(source_request=req)
    wait_for(lambda: status_of(grant) == GrantStatus.ACTIVE)
    role = grant_principal(grant).db_role
    db = target_source.database
    assert "email" not in grant.columns
    assert target_can(db, role, 'SELECT id, country FROM "Sales EU".customers')
    assert not target_can(db, role, 'SELECT email FROM "Sales EU".customers')
    assert not target_can(db, role, 'SELECT * FROM "Sales EU".customers')


def test_hostile_table_is_provisioned_and_revoked(target_source, analyst, owner):
    ds = dataset(target_source, "finance", 'Order "Lines"; DROP TABLE x; --')
    grant = approve_read(analyst, owner, ds)
    wait_for(lambda: status_of(grant) == GrantStatus.ACTIVE)
    role = grant_principal(grant).db_role
    query = 'SELECT * FROM finance."Order ""Lines""; DROP TABLE x; --"'
    assert target_can(target_source.database, role, query)
    grant_revoke(grant=grant, actor=owner, reason="done")
    wait_for(lambda: not target_can(target_source.database, role, query))


def test_grant_expires_without_anyone_acting(target_source, analyst, owner):
    ds = dataset(target_source, "finance", "ledger")
    grant = approve_read(analyst, owner, ds)
    wait_for(lambda: status_of(grant) == GrantStatus.ACTIVE)
    role = grant_principal(grant).db_role
    assert target_can(target_source.database, role, "SELECT * FROM finance.ledger")
    # Bring the end forward to "now + 1 s"; beat (every second in tests) expires and revokes it.
    Grant.objects.filter(pk=grant.pk).update(ends_at=timezone.now() + dt.timedelta(seconds=1))
    wait_for(lambda: status_of(grant) == GrantStatus.EXPIRED, timeout=20)
    wait_for(lambda: ProvisioningJob.objects.filter(grant=grant, action="revoke", status=JobStatus.SUCCEEDED).exists())
    assert not target_can(target_source.database, role, "SELECT * FROM finance.ledger")
    expired = AuditEvent.objects.get(action="grant.expired")
    assert expired.actor is None and expired.source == "task"


def test_plan_changed_between_approval_and_apply_fails_safe(target_source, analyst, owner, gov_admin, classifications):
    ds = dataset(target_source, "finance", "ledger")
    req = access_request_submit(requester=analyst, dataset=ds, justification="x", duration=DAYS)
    # Stop the worker from picking the job up before the change: approve inside a transaction that
    # also changes the dataset afterwards, as a concurrent edit would.
    from django.db import transaction

    with transaction.atomic():
        access_request_approve(access_request=req, approver=owner)
        dataset_update(dataset=ds, actor=gov_admin, classification=classifications["restricted"])
    grant = Grant.objects.get(source_request=req)
    job = wait_for(lambda: ProvisioningJob.objects.filter(grant=grant, status=JobStatus.FAILED).first())
    assert "Plan changed since approval" in job.last_error
    assert status_of(grant) == GrantStatus.FAILED
    assert not target_can(target_source.database, grant_principal(grant).db_role, "SELECT * FROM finance.ledger")


def test_lost_message_is_recovered_by_the_sweeper(target_source, analyst, owner):
    """A job whose message never reached a worker (Redis flushed, broker restarted) is re-enqueued.

    The loss is arranged deterministically: Redis is flushed and the job row is left queued with no
    message, exactly the state a flush after approval leaves behind.
    """
    ds = dataset(target_source, "finance", "ledger")
    type(target_source).objects.filter(pk=target_source.pk).update(provisioning_enabled=False)
    grant = approve_read(analyst, owner, ds)  # recorded, no job: provisioning is off for a moment
    type(target_source).objects.filter(pk=target_source.pk).update(provisioning_enabled=True)
    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()
    job = ProvisioningJob.objects.create(grant=grant, action="apply", plan_digest=grant.plan_digest)
    # Its message was sent long ago (PROVISIONING_STUCK_AFTER_SECONDS is 2 s for the test worker).
    ProvisioningJob.objects.filter(pk=job.pk).update(published_at=timezone.now() - dt.timedelta(seconds=30))
    wait_for(lambda: status_of(grant) == GrantStatus.ACTIVE, timeout=30)
    assert AuditEvent.objects.filter(action="provisioning_job.requeued", target_id=str(job.pk)).exists()
    assert target_can(target_source.database, grant_principal(grant).db_role, "SELECT * FROM finance.ledger")


def test_a_failed_grant_is_not_applied_by_another_grants_job(target_source, analyst, owner, gov_admin, classifications):
    """A grant that failed safe (plan changed) must not ride along when the same person's other
    grant on the same table is converged."""
    from django.db import transaction

    ds = dataset(target_source, "finance", "ledger")
    write = access_request_submit(requester=analyst, dataset=ds, level="write", justification="fix", duration=DAYS)
    with transaction.atomic():
        access_request_approve(access_request=write, approver=owner)
        dataset_update(dataset=ds, actor=gov_admin, classification=classifications["internal"])
    failed = Grant.objects.get(source_request=write)
    wait_for(lambda: status_of(failed) == GrantStatus.FAILED)
    read = access_request_submit(requester=analyst, dataset=ds, justification="read", duration=DAYS)
    access_request_approve(access_request=read, approver=owner)
    other = Grant.objects.get(source_request=read)
    wait_for(lambda: status_of(other) == GrantStatus.ACTIVE)
    role = grant_principal(other).db_role
    assert target_can(target_source.database, role, "SELECT * FROM finance.ledger")
    assert not target_can(target_source.database, role, "UPDATE finance.ledger SET amount = amount")
