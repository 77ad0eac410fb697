"""How many portal round trips one job costs, per kind of job, pinned: the engine is on the path of
every approval, revocation and membership change, and a round trip added there is paid by each.

Jobs are queued by hand with provisioning off while the portal records the grants, so no worker
hears of them, and run in this process."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.roles import REQUESTERS
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
from governance.services.engine.run import provisioning_job_run
from governance.services.grants import grant_revoke
from governance.services.requests import access_request_approve, access_request_submit
from governance.services.roles import role_create, role_member_add
from tests.provisioning.conftest import target_can

pytestmark = pytest.mark.django_db(transaction=True)
QUERY = "SELECT * FROM finance.ledger"
DAY = dt.timedelta(days=1)


@contextmanager
def quietly(source: DataSource) -> Iterator[None]:
    """Provisioning off while the portal records something: no job is queued or published."""
    DataSource.objects.filter(pk=source.pk).update(provisioning_enabled=False)
    try:
        yield
    finally:
        DataSource.objects.filter(pk=source.pk).update(provisioning_enabled=True)


class CountingCursor(psycopg2.extensions.cursor):
    """Every statement sent on the portal's connection, those Django does not see included
    (`execute_values` and `COPY` on the raw cursor)."""

    sent: list[str] = []

    def execute(self, query: Any, vars: Any = None) -> Any:
        CountingCursor.sent.append(query.decode() if isinstance(query, bytes) else str(query))
        return super().execute(query, vars)

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> Any:
        CountingCursor.sent.append(str(sql))
        return super().copy_expert(sql, file, size)


def run_counted(job: ProvisioningJob) -> tuple[int, list[str]]:
    """Run the job here; its portal round trips: each statement, BEGIN and COMMIT."""
    connection.ensure_connection()
    raw = connection.connection
    CountingCursor.sent = []
    raw.cursor_factory = CountingCursor
    try:
        with CaptureQueriesContext(connection) as ctx:
            provisioning_job_run(job_id=job.pk)
    finally:
        raw.cursor_factory = psycopg2.extensions.cursor
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.last_error
    transactions = [q["sql"] for q in ctx.captured_queries if q["sql"] in ("BEGIN", "COMMIT", "ROLLBACK")]
    trace = [" ".join(s.split())[:100] for s in CountingCursor.sent] + transactions
    return len(trace), trace


def approved(user: Any, owner: Any, ds: Dataset, source: DataSource, **kw: Any) -> Grant:
    with quietly(source):
        req = access_request_submit(requester=user, dataset=ds, justification="q", duration=DAY, **kw)
        access_request_approve(access_request=req, approver=owner)
    return Grant.objects.get(source_request=req)


def apply_job(grant: Grant) -> ProvisioningJob:
    return ProvisioningJob.objects.create(grant=grant, action=JobAction.APPLY, plan_digest=grant.plan_digest)


def test_portal_round_trips_of_one_job(target_source: DataSource, owner: Any, make_user: Any, gov_admin: Any) -> None:
    ledger = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    customers = Dataset.objects.get(source=target_source, schema="Sales EU", name="customers")
    db = target_source.database
    first, second = make_user("qc_first", REQUESTERS), make_user("qc_second", REQUESTERS)
    counts: dict[str, int] = {}
    traces: dict[str, list[str]] = {}

    # A plain apply for someone new on the source (their principal row is recorded too), then
    # one for someone the source knows.
    grant = approved(first, owner, ledger, target_source)
    counts["new principal"], traces["new principal"] = run_counted(apply_job(grant))
    other = approved(first, owner, customers, target_source)
    counts["known principal"], traces["known principal"] = run_counted(apply_job(other))
    assert target_can(db, grant_principal(grant).db_role, QUERY)

    # A revocation.
    with quietly(target_source):
        grant_revoke(grant=grant, actor=owner, reason="done")
    revoke = ProvisioningJob.objects.create(grant=grant, action=JobAction.REVOKE)
    counts["revoke"], traces["revoke"] = run_counted(revoke)
    assert not target_can(db, grant_principal(grant).db_role, QUERY)

    # A membership change: a member of a portal Role whose grant is active on the source.
    with quietly(target_source):
        role = role_create(actor=gov_admin, name="Query counters")
        role_member_add(role=role, user=second, actor=gov_admin)
    role_grant = approved(second, owner, ledger, target_source, grantee_role=role)
    with quietly(target_source):  # the membership job it would queue is queued below instead
        run_counted(apply_job(role_grant))
    assert Grant.objects.get(pk=role_grant.pk).status == GrantStatus.ACTIVE
    membership = ProvisioningJob.objects.create(
        membership=RoleMembership.objects.get(role=role), source=target_source, action=JobAction.MEMBERSHIP
    )
    counts["membership"], traces["membership"] = run_counted(membership)
    assert target_can(db, principal_for(source=target_source, user=second).db_role, QUERY)

    # Lower is welcome (lower the pins with it); higher needs a reason. (Before the engine was one
    # loop, issue 15 item 4: 15, 14, 17, 16. An apply's +1 since then: the outbox row of "your access
    # is active", issue 16, written in the recording transaction; docs/notifications.md.)
    assert counts == {"new principal": 16, "known principal": 15, "revoke": 13, "membership": 14}, (counts, traces)
