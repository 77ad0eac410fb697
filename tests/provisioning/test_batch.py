"""Bulk approvals are applied in batches (one target transaction per batch) by a real worker, with
the same outcomes as one job at a time: real privileges, verified, audited; anything a batch cannot
finish cleanly gets its own precise outcome (failed alone, or run again alone)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from psycopg2 import sql

from accounts.models import User
from accounts.roles import REQUESTERS
from audit.models import AuditEvent
from governance.models import Dataset, Grant, GrantStatus, JobStatus, ProvisioningJob
from governance.provisioning import grant_principal
from governance.services.catalog import dataset_update
from governance.services.engine.sweep import provisioning_jobs_sweep
from governance.services.publishing import batched_publishing
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.sync import datasource_sync
from tests.provisioning.conftest import admin_connection, target_can, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]
DAYS = dt.timedelta(days=1)
TABLES = {
    "finance.ledger": ("finance", "ledger"),
    '"Sales EU".customers': ("Sales EU", "customers"),
}


def approve(user: User, owner: User, ds: Dataset, **kw: Any) -> Grant:
    req = access_request_submit(requester=user, dataset=ds, justification="quarterly review", duration=7 * DAYS, **kw)
    access_request_approve(access_request=req, approver=owner)
    return Grant.objects.get(source_request=req)


def all_done(grants: list[Grant]) -> bool:
    return not ProvisioningJob.objects.filter(
        grant__in=grants, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]
    ).exists()


def batch_sizes(grants: list[Grant]) -> list[int]:
    """The size of the group each grant was applied in (a single job is a run of one)."""
    events = AuditEvent.objects.filter(action="grant.activated", target_id__in=[str(g.pk) for g in grants])
    return sorted(e.metadata["batch"]["jobs"] for e in events)


def test_bulk_approval_is_applied_in_batches_with_real_privileges(
    target_source: Any, owner: User, make_user: Callable[..., User], settings: Any
) -> None:
    users = [make_user(f"bulk{i}", REQUESTERS) for i in range(12)]
    datasets = [Dataset.objects.get(source=target_source, schema=s, name=n) for s, n in TABLES.values()]
    with batched_publishing():
        grants = [approve(user, owner, ds) for user in users for ds in datasets]
        assert not ProvisioningJob.objects.exclude(status=JobStatus.QUEUED).exists()  # nothing published yet
    wait_for(lambda: all_done(grants), timeout=30)

    db = target_source.database
    for grant in grants:
        grant.refresh_from_db()
        assert grant.status == GrantStatus.ACTIVE and grant.verified_at is not None
    for user in users:
        role = grant_principal(Grant.objects.get(grantee_user=user, dataset=datasets[0])).db_role
        for table in TABLES:
            assert target_can(db, role, f"SELECT * FROM {table}")
        assert not target_can(db, role, "UPDATE finance.ledger SET amount = 0")
    jobs = ProvisioningJob.objects.filter(grant__in=grants)
    assert {(j.status, j.attempts) for j in jobs} == {(JobStatus.SUCCEEDED, 1)}
    # 24 jobs in one batch (batch size 250): one target transaction, each CREATE ROLE once.
    assert batch_sizes(grants) == [24] * 24
    events = AuditEvent.objects.filter(action="grant.activated")
    assert all(e.changes == {"status": ["approved", "active"]} and e.actor is None for e in events)
    creates = [s for j in jobs for s in j.statements if s.startswith("CREATE ROLE")]
    people = [s for s in creates if "_u_bulk" in s]
    packages = [s for s in creates if "_p_" in s]
    assert len(people) == 12 and len(set(people)) == 12  # each person's role once
    assert len(packages) == len(TABLES) and len(set(packages)) == len(TABLES)  # one access package per table
    # The packages hold the privileges (USAGE included); the people only their membership.
    usages = [s for j in jobs for s in j.statements if s.startswith("GRANT USAGE")]
    assert len(usages) == len(TABLES) and all("_p_" in s.split(" TO ")[1].split(";")[0] for s in usages)
    memberships = [s for j in jobs for s in j.statements if s.startswith('GRANT "') and "_p_" in s]
    assert len(memberships) == 24 and len(set(memberships)) == 24  # one per grant


def test_the_sweeper_leaves_a_bulk_actions_jobs_alone_until_it_publishes_them(
    target_source: Any, owner: User, make_user: Callable[..., User], settings: Any
) -> None:
    """A bulk action commits item by item and publishes at its end, which may be later than the
    sweeper's "message lost" threshold: the jobs it holds are not sent twice meanwhile."""
    users = [make_user(f"held{i}", REQUESTERS) for i in range(2)]
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    later = timezone.now() + dt.timedelta(seconds=settings.PROVISIONING_STUCK_AFTER_SECONDS + 1)
    with batched_publishing():
        grants = [approve(user, owner, ds) for user in users]
        assert provisioning_jobs_sweep(now=later) == 0  # held by the block, not lost
    jobs = ProvisioningJob.objects.filter(grant__in=grants)
    assert all(job.published_at <= timezone.now() for job in jobs)  # their clock started on publishing
    wait_for(lambda: all_done(grants), timeout=30)
    assert {(j.status, j.attempts) for j in jobs.all()} == {(JobStatus.SUCCEEDED, 1)}
    assert not AuditEvent.objects.filter(action="provisioning_job.requeued").exists()


def test_few_jobs_are_published_one_by_one(target_source: Any, owner: User, make_user: Callable[..., User]) -> None:
    users = [make_user(f"few{i}", REQUESTERS) for i in range(3)]
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    with batched_publishing():
        grants = [approve(user, owner, ds) for user in users]
    wait_for(lambda: all_done(grants), timeout=30)
    assert {Grant.objects.get(pk=g.pk).status for g in grants} == {GrantStatus.ACTIVE}
    assert batch_sizes(grants) == [1, 1, 1]  # below PROVISIONING_BATCH_MIN: one message per job


def test_plan_changed_in_a_batch_fails_alone(
    target_source: Any, owner: User, gov_admin: User, classifications: Any, make_user: Callable[..., User]
) -> None:
    users = [make_user(f"pc{i}", REQUESTERS) for i in range(11)]
    ledger = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    customers = Dataset.objects.get(source=target_source, schema="Sales EU", name="customers")
    with transaction.atomic(), batched_publishing():
        grants = [approve(user, owner, ledger) for user in users]
        changed = approve(users[0], owner, customers)
        dataset_update(dataset=customers, actor=gov_admin, classification=classifications["internal"])
    wait_for(lambda: all_done([*grants, changed]), timeout=30)
    job = ProvisioningJob.objects.get(grant=changed, action="apply")
    assert job.status == JobStatus.FAILED and "Plan changed since approval" in job.last_error
    assert job.attempts == 1  # failed in the batch's run, before any lock, at its first attempt
    assert Grant.objects.get(pk=changed.pk).status == GrantStatus.FAILED
    assert {Grant.objects.get(pk=g.pk).status for g in grants} == {GrantStatus.ACTIVE}
    assert batch_sizes(grants) == [11] * 11
    role = grant_principal(changed).db_role
    assert target_can(target_source.database, role, "SELECT * FROM finance.ledger")
    assert not target_can(target_source.database, role, 'SELECT id FROM "Sales EU".customers')


def test_a_failing_batch_rolls_back_and_every_job_gets_its_own_outcome(
    target_source: Any, owner: User, make_user: Callable[..., User]
) -> None:
    """A table dropped behind the portal's back makes the batch's one target transaction fail: it
    rolls back whole, and each job then runs alone: the others are applied, that one fails clearly."""
    db = target_source.database
    conn = admin_connection(db)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS finance.scratch_batch (id int)")
    try:
        datasource_sync(source=target_source)
        scratch = Dataset.objects.get(source=target_source, schema="finance", name="scratch_batch")
        ledger = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
        users = [make_user(f"fb{i}", REQUESTERS) for i in range(10)]
        with batched_publishing():
            grants = [approve(user, owner, ledger) for user in users]
            doomed = approve(users[0], owner, scratch)
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP TABLE finance.scratch_batch"))
        wait_for(lambda: all_done([*grants, doomed]), timeout=30)
        job = ProvisioningJob.objects.get(grant=doomed, action="apply")
        assert job.status == JobStatus.FAILED
        assert "scratch_batch" in job.last_error and "does not exist" in job.last_error
        assert {Grant.objects.get(pk=g.pk).status for g in grants} == {GrantStatus.ACTIVE}
        assert batch_sizes(grants) == [1] * 10  # the batch committed nothing: each job then ran alone
        assert all(target_can(db, grant_principal(g).db_role, "SELECT * FROM finance.ledger") for g in grants)
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS finance.scratch_batch")
        conn.close()


def test_a_role_name_already_mapped_to_someone_else_is_never_provisioned(
    target_source: Any, owner: User, make_user: Callable[..., User]
) -> None:
    """The managed name a grantee would get already belongs to another person's mapping (say after
    a username change): the job fails with that reason, nothing is granted under the name."""
    from governance.models import SourcePrincipal
    from governance.provisioning import managed_role_name

    newcomer, other = make_user("renamed", REQUESTERS), make_user("someone_else", REQUESTERS)
    name = managed_role_name(target_source, "u", newcomer.username)
    SourcePrincipal.objects.create(source=target_source, user=other, db_role=name, managed=True)
    ledger = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    grant = approve(newcomer, owner, ledger)
    wait_for(lambda: all_done([grant]), timeout=30)
    job = ProvisioningJob.objects.get(grant=grant, action="apply")
    assert job.status == JobStatus.FAILED
    assert f"{name} on this source already belongs to user #{other.pk}" in job.last_error
    assert Grant.objects.get(pk=grant.pk).status == GrantStatus.FAILED
    assert not target_can(target_source.database, name, "SELECT * FROM finance.ledger")
