"""One engine for every kind of job: a single run takes applies, a revoke, a JIT apply and a
membership change together, shares one target transaction between the jobs that can share one, and
gives each job the outcome it would have had alone (run in this process, no worker)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from accounts.roles import REQUESTERS
from audit.models import AuditEvent
from governance.models import (
    Dataset,
    DataSource,
    Grant,
    GrantStatus,
    JobAction,
    JobStatus,
    ProvisioningJob,
    RoleMembership,
)
from governance.provisioning import grant_principal, principal_for
from governance.services.catalog import dataset_update
from governance.services.engine.run import provisioning_jobs_run
from governance.services.grants import grant_revoke
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.roles import role_create, role_member_add
from tests.provisioning.conftest import target_can, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
LEDGER = "SELECT * FROM finance.ledger"
DAY = dt.timedelta(days=1)


@contextmanager
def quietly(source: DataSource) -> Iterator[None]:
    """Provisioning off while the portal records something (an approval, a revocation): no job is
    queued or published; the test queues and runs the jobs itself."""
    DataSource.objects.filter(pk=source.pk).update(provisioning_enabled=False)
    try:
        yield
    finally:
        DataSource.objects.filter(pk=source.pk).update(provisioning_enabled=True)


def approved(user: Any, owner: Any, ds: Dataset, source: DataSource, **kw: Any) -> Grant:
    req = access_request_submit(requester=user, dataset=ds, justification="q", duration=DAY, **kw)
    with quietly(source):
        access_request_approve(access_request=req, approver=owner)
    return Grant.objects.get(source_request=req)


def job(grant: Grant, action: str = JobAction.APPLY) -> ProvisioningJob:
    return ProvisioningJob.objects.create(grant=grant, action=action, plan_digest=grant.plan_digest)


def batch_of(grant: Grant, action: str = "grant.activated") -> int:
    return AuditEvent.objects.get(action=action, target_id=str(grant.pk)).metadata["batch"]["jobs"]


def test_one_run_takes_every_kind_of_job_and_each_gets_its_own_outcome(
    target_source: DataSource, owner: Any, gov_admin: Any, classifications: Any, make_user: Any
) -> None:
    ledger = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    customers = Dataset.objects.get(source=target_source, schema="Sales EU", name="customers")
    db = target_source.database
    readers = [make_user(f"run{i}", REQUESTERS) for i in range(2)]
    leaving, with_login, member, changed = (make_user(n, REQUESTERS) for n in ("leaving", "jit", "member", "chg"))

    # Someone whose access is revoked: applied first, on its own.
    gone = approved(leaving, owner, ledger, target_source)
    assert provisioning_jobs_run(job_ids=[job(gone).pk]).as_dict()["succeeded"] == 1
    with quietly(target_source):
        grant_revoke(grant=gone, actor=owner, reason="moved on")
    # A portal Role whose grant is active: its member's membership job.
    with quietly(target_source):
        role = role_create(actor=gov_admin, name="Run testers")
        role_member_add(role=role, user=member, actor=gov_admin)
    role_grant = approved(member, owner, ledger, target_source, grantee_role=role)
    with quietly(target_source):  # (the membership job it would queue is queued below)
        provisioning_jobs_run(job_ids=[job(role_grant).pk])
    membership = ProvisioningJob.objects.create(
        membership=RoleMembership.objects.get(role=role), source=target_source, action=JobAction.MEMBERSHIP
    )
    # Two plain applies, a JIT apply, and an apply whose plan changed after approval.
    plain = [approved(user, owner, ledger, target_source) for user in readers]
    jit = approved(with_login, owner, ledger, target_source, jit_credentials=True)
    stale = approved(changed, owner, customers, target_source)
    with quietly(target_source):
        dataset_update(dataset=customers, actor=gov_admin, classification=classifications["internal"])

    jobs = [job(g) for g in plain] + [job(gone, JobAction.REVOKE), job(jit), job(stale), membership]
    outcome = provisioning_jobs_run(job_ids=[j.pk for j in jobs])

    assert outcome.as_dict() | {"target_ms": 0} == {
        "succeeded": 5, "failed": 1, "retrying": 0, "parked": 0, "split": 0, "target_ms": 0
    }  # fmt: skip
    # The plain applies and the plain revoke shared one target transaction; the JIT apply (a login
    # to create after its converge) and the membership change each had their own.
    assert [batch_of(g) for g in plain] == [3, 3]
    assert batch_of(gone, "grant.revocation_verified") == 3
    assert batch_of(jit) == 1
    for g in [*plain, jit]:
        assert Grant.objects.get(pk=g.pk).status == GrantStatus.ACTIVE
        assert target_can(db, grant_principal(g).db_role, LEDGER)
    assert not target_can(db, grant_principal(gone).db_role, LEDGER)
    jit_job = ProvisioningJob.objects.get(grant=jit, action=JobAction.APPLY)
    assert any("LOGIN PASSWORD '[REDACTED]'" in line for line in jit_job.statements), jit_job.statements
    assert target_can(db, principal_for(source=target_source, user=member).db_role, LEDGER)
    assert AuditEvent.objects.filter(action="role_membership.provisioned", target_id=str(membership.pk)).exists()
    # The changed plan failed alone, at its first attempt, before anything touched the target, and
    # its clean-up revoke was queued.
    failed = ProvisioningJob.objects.get(grant=stale, action=JobAction.APPLY)
    assert (failed.status, failed.attempts) == (JobStatus.FAILED, 1)
    assert "Plan changed since approval" in failed.last_error
    assert Grant.objects.get(pk=stale.pk).status == GrantStatus.FAILED
    cleanup = ProvisioningJob.objects.get(grant=stale, action=JobAction.REVOKE)
    provisioning_jobs_run(job_ids=[cleanup.pk])  # (published too: a worker may have run it first)
    wait_for(lambda: ProvisioningJob.objects.get(pk=cleanup.pk).status == JobStatus.SUCCEEDED)
    assert not target_can(db, grant_principal(stale).db_role, 'SELECT id FROM "Sales EU".customers')
    assert {j.attempts for j in ProvisioningJob.objects.filter(pk__in=[j.pk for j in jobs])} == {1}
