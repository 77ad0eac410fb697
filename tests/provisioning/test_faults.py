"""Faults with real parts: a target that does not answer (for a whole minute, for real), one that
answers with an error, a worker killed mid-job, a live worker's long job, a credential that no
longer decrypts.

Timings come from the test worker's settings (tests/provisioning/conftest.py): lease 3 s, sweeper
and prober every second, a lost message published again after 2 s, retries capped at 1 s."""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Iterable
from typing import Any

import psycopg2
import pytest
from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from psycopg2 import sql

from accounts.roles import REQUESTERS
from audit.models import AuditEvent
from governance import crypto
from governance.models import (
    Dataset,
    DataSource,
    Grant,
    GrantStatus,
    JobAction,
    JobStatus,
    ProvisioningJob,
    SourceHealth,
)
from governance.provisioners import postgres as pg
from governance.provisioning import grant_principal, lock_key
from governance.services.grants import grant_revoke
from governance.services.locks import object_lock_id
from governance.services.publishing import batched_publishing
from governance.services.requests import access_request_approve, access_request_submit
from tests import tls_target
from tests.db import admin_connection as portal_db_connection
from tests.provisioning.conftest import admin_connection, target_can, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker"),
    pytest.mark.worker,
    pytest.mark.fault,
]

# The test worker's timings (tests/provisioning/conftest.py: Worker.env).
LEASE_S, SWEEP_S = 3.0, 1.0


def submit_and_approve(analyst: Any, owner: Any, source: DataSource, table: str = "ledger") -> Grant:
    ds = Dataset.objects.get(source=source, schema="finance", name=table)
    req = access_request_submit(requester=analyst, dataset=ds, justification="audit", duration=dt.timedelta(days=2))
    access_request_approve(access_request=req, approver=owner)
    return Grant.objects.get(source_request=req)


def waiting_job(grant: Grant, action: str = JobAction.APPLY) -> ProvisioningJob | None:
    return ProvisioningJob.objects.filter(grant=grant, action=action, waiting_since__isnull=False).first()


def statuses(grants: Iterable[Grant]) -> set[str]:
    return set(Grant.objects.filter(pk__in=[g.pk for g in grants]).values_list("status", flat=True))


def test_unreachable_target_parks_its_jobs_then_resumes_them_when_it_answers(target_source, analyst, owner, make_user):
    """The old behaviour (5 quick retries, then the grant failed for good and needed a manual
    retry) is gone on purpose: nothing answers on the source's port, so its jobs wait for it
    without spending attempts, and resume on their own within seconds of it answering."""
    real_port = target_source.port
    DataSource.objects.filter(pk=target_source.pk).update(port=1)  # nothing listens there
    grant = submit_and_approve(analyst, owner, target_source)
    job = wait_for(lambda: waiting_job(grant), timeout=20)
    assert job.status == JobStatus.QUEUED and job.attempts == 1
    assert "connect" in job.last_error.lower() and "password" not in job.last_error.lower()
    health = SourceHealth.objects.get(source=target_source)
    assert not health.reachable and health.last_error == job.last_error
    # A job queued while the source is known to be down waits at once: no attempt, no connection.
    second = submit_and_approve(make_user("second", REQUESTERS), owner, target_source)
    second_job = wait_for(lambda: waiting_job(second), timeout=20)
    assert second_job.attempts == 0
    # The prober keeps asking; nothing fails meanwhile, however long it takes.
    wait_for(lambda: SourceHealth.objects.get(source=target_source).failed_probes >= 3, timeout=20)
    assert statuses([grant, second]) == {GrantStatus.APPROVED}
    assert not ProvisioningJob.objects.filter(status=JobStatus.FAILED).exists()
    assert AuditEvent.objects.filter(action="source.unreachable").count() == 1
    assert AuditEvent.objects.filter(action="provisioning_job.waiting").count() == 2

    DataSource.objects.filter(pk=target_source.pk).update(port=real_port)  # the target answers again
    back = time.monotonic()
    wait_for(lambda: statuses([grant, second]) == {GrantStatus.ACTIVE}, timeout=20)
    resumed_in = time.monotonic() - back
    print(f"\njobs resumed {resumed_in:.1f} s after the source answered again")
    assert resumed_in < 8  # the prober runs every second here (8 s: a loaded 2-core machine)
    recovered = AuditEvent.objects.get(action="source.recovered")
    assert recovered.metadata["via"] == "probe" and recovered.metadata["released"] == 2
    assert SourceHealth.objects.get(source=target_source).reachable
    for g in (grant, second):
        assert target_can(target_source.database, grant_principal(g).db_role, "SELECT * FROM finance.ledger")


def test_a_permanent_error_still_fails_at_once_with_its_reason(target_source, analyst, owner):
    """A target that answers "no" (here: the portal's password is wrong) is not an outage: the
    apply fails at its first attempt with the server's reason, and the source stays reachable."""
    good = DataSource.objects.get(pk=target_source.pk).password_encrypted
    DataSource.objects.filter(pk=target_source.pk).update(password_encrypted=crypto.encrypt("not-the-password"))
    try:
        grant = submit_and_approve(analyst, owner, target_source)
        job = wait_for(lambda: ProvisioningJob.objects.filter(grant=grant, status=JobStatus.FAILED).first(), timeout=20)
        assert job.attempts == 1
        assert "password authentication failed" in job.last_error and "not-the-password" not in job.last_error
        assert AuditEvent.objects.get(action="provisioning_job.failed", target_id=str(job.pk)).reason == job.last_error
        grant.refresh_from_db()
        assert grant.status == GrantStatus.FAILED
        assert not SourceHealth.objects.filter(source=target_source, reachable=False).exists()
        assert not AuditEvent.objects.filter(action="source.unreachable").exists()
        # The clean-up revoke a failed apply queues meets the same refusal: a permanent error,
        # failed with its reason too (and raised as overdue if nobody acts).
        cleanup = wait_for(
            lambda: ProvisioningJob.objects.filter(grant=grant, action="revoke", status=JobStatus.FAILED).first()
        )
        assert "password authentication failed" in cleanup.last_error
    finally:
        DataSource.objects.filter(pk=target_source.pk).update(password_encrypted=good)


def test_an_apply_that_keeps_failing_transiently_is_flagged_stalled_never_failed(target_source, analyst, owner):
    """The target answers but refuses new sessions ("too many connections for role"): an ordinary
    transient error, retried with backoff. Past PROVISIONING_MAX_ATTEMPTS (3 here) the job is
    flagged stalled to operators, once, and keeps retrying; the grant never turns failed."""
    role = sql.Identifier(tls_target.PORTAL_ROLE)
    dba = admin_connection()
    try:
        with dba.cursor() as cur:
            cur.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 0").format(role))
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                        [tls_target.PORTAL_ROLE])  # fmt: skip
        grant = submit_and_approve(analyst, owner, target_source)
        stalled = wait_for(lambda: AuditEvent.objects.filter(action="provisioning_job.stalled").first(), timeout=40)
        job = ProvisioningJob.objects.get(grant=grant, action=JobAction.APPLY)
        assert stalled.target_id == str(job.pk) and "too many connections" in stalled.reason
        time.sleep(2)  # it goes on retrying (every second at most here), and is flagged only once
        job.refresh_from_db()
        assert job.status in (JobStatus.QUEUED, JobStatus.RUNNING) and job.attempts > 3
        assert AuditEvent.objects.filter(action="provisioning_job.stalled").count() == 1
        grant.refresh_from_db()
        assert grant.status == GrantStatus.APPROVED
        assert not AuditEvent.objects.filter(action="provisioning_job.failed").exists()
    finally:
        with dba.cursor() as cur:
            cur.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT -1").format(role))
        dba.close()
    wait_for(lambda: statuses([grant]) == {GrantStatus.ACTIVE}, timeout=30)


OUTAGE_S = 60
N_APPLY = 100
N_REVOKE = 50


def select_allowed(dbname: str, roles: list[str], query: str) -> dict[str, bool]:
    """`target_can` for many roles in one superuser session (SET ROLE, try, RESET)."""
    conn = admin_connection(dbname)
    allowed: dict[str, bool] = {}
    try:
        with conn.cursor() as cur:
            for role in roles:
                try:
                    cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
                    cur.execute(query)
                    allowed[role] = True
                except (psycopg2.errors.InsufficientPrivilege, psycopg2.errors.InvalidParameterValue):
                    allowed[role] = False
                finally:
                    cur.execute("RESET ROLE")
    finally:
        conn.close()
    return allowed


@pytest.mark.slow
def test_a_minute_long_outage_loses_no_grant_and_revocations_finish_within_10_s_of_recovery(
    target_source, owner, make_user
):
    """The target cluster is really shut down for 60 s (every session terminated, connections
    refused) while 100 approvals and 50 revocations are queued. Nothing fails, the jobs wait
    without spending attempts, and when the cluster is back the revocations run first: each is
    done within 10 s of the recovery, measured from the job rows. The target is checked afterwards:
    the 100 new grantees can SELECT, the 50 revoked cannot."""
    cluster = tls_target.current()
    ledger = Dataset.objects.get(source=target_source, schema="finance", name="ledger")

    def approve(user: Any) -> Grant:
        req = access_request_submit(requester=user, dataset=ledger, justification="q3", duration=dt.timedelta(days=2))
        access_request_approve(access_request=req, approver=owner)
        return Grant.objects.get(source_request=req)

    # Before: 50 people hold access that is revoked during the outage.
    leavers = [make_user(f"leaver{i}", REQUESTERS) for i in range(N_REVOKE)]
    with batched_publishing():
        held = [approve(user) for user in leavers]
    wait_for(lambda: statuses(held) == {GrantStatus.ACTIVE}, timeout=60)
    joiners = [make_user(f"joiner{i}", REQUESTERS) for i in range(N_APPLY)]

    cluster.stop_server()
    down = time.monotonic()
    try:
        # During: approvals one by one (as approvers decide), revocations as people leave.
        new = [approve(user) for user in joiners]
        for grant in held:
            grant_revoke(grant=grant, actor=owner, reason="left the team")
        jobs = ProvisioningJob.objects.filter(
            Q(action=JobAction.APPLY, grant__in=[g.pk for g in new])
            | Q(action=JobAction.REVOKE, grant__in=[g.pk for g in held])
        )
        wait_for(lambda: jobs.filter(waiting_since__isnull=False).count() == N_APPLY + N_REVOKE, timeout=45)
        spent = sum(jobs.values_list("attempts", flat=True))
        queued_in = time.monotonic() - down
        assert not Grant.objects.filter(status=GrantStatus.FAILED).exists()
        assert not ProvisioningJob.objects.filter(status=JobStatus.FAILED).exists()
        assert spent <= 5, f"{spent} attempts spent on a source known to be down"
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
        assert not Grant.objects.filter(status=GrantStatus.FAILED).exists()
        failed_probes = SourceHealth.objects.get(source=target_source).failed_probes
    finally:
        if not cluster.running:
            cluster.start_server()
        # This process's pooled connections to the target died with it; later tests start afresh.
        pg.POOL.close_all()
    # The recovery: start_server() returns once the cluster accepts connections (it polls every
    # 0.1 s), so every delay below is measured from at most 0.1 s after the target answered.
    outage_s = time.monotonic() - down
    back = timezone.now()

    done = [*new, *held]
    wait_for(lambda: not jobs.exclude(status=JobStatus.SUCCEEDED).exists(), timeout=60)
    assert statuses(new) == {GrantStatus.ACTIVE} and statuses(held) == {GrantStatus.REVOKED}
    assert not Grant.objects.filter(pk__in=[g.pk for g in done], status=GrantStatus.FAILED).exists()

    def delays(action: str) -> list[float]:
        return sorted(
            (f - back).total_seconds() for f in jobs.filter(action=action).values_list("finished_at", flat=True) if f
        )

    revokes, applies = delays(JobAction.REVOKE), delays(JobAction.APPLY)
    recovered = AuditEvent.objects.get(action="source.recovered")
    print(
        f"\noutage {outage_s:.1f} s; {N_APPLY} approvals + {N_REVOKE} revocations queued in {queued_in:.1f} s,"
        f" {spent} attempts spent while down, {failed_probes} failed probes"
        f"\nreleased {recovered.metadata['released']} jobs {recovered.metadata['unreachable_s']} s after the"
        f" source was marked unreachable"
        f"\nrevocations done after recovery: median {statistics.median(revokes):.2f} s, max {revokes[-1]:.2f} s"
        f"\napplies done after recovery: median {statistics.median(applies):.2f} s, max {applies[-1]:.2f} s"
    )
    assert revokes[-1] <= 10.0, f"a revocation finished {revokes[-1]:.1f} s after the target came back"
    assert revokes[-1] <= applies[0] + 0.5  # revocations first (one worker here: strictly in order)
    assert recovered.metadata["released"] == N_APPLY + N_REVOKE
    assert failed_probes >= 10  # probed all along (every second here), with no job spending attempts
    assert AuditEvent.objects.filter(action="source.unreachable").count() == 1

    roles = {g.pk: grant_principal(g).db_role for g in done}
    allowed = select_allowed(target_source.database, list(roles.values()), "SELECT * FROM finance.ledger")
    assert [g.pk for g in new if not allowed[roles[g.pk]]] == []
    assert [g.pk for g in held if allowed[roles[g.pk]]] == []


def test_worker_killed_mid_job_is_recovered_within_its_lease_and_applies_exactly_once(
    target_source, analyst, owner, celery_worker
):
    """SIGKILL while the job waits on the target: no ack, no cleanup, no more heartbeats. Its lease
    passes, the sweeper queues it again, a new worker converges it, and the privilege is there
    once. Bound: lease + sweep interval (+ the new worker's start here); in production 20 + 5 s,
    where it used to be two minutes."""
    # Hold the per-object lock the job takes before touching the target, from another session of
    # the portal database: the job is claimed (running) and then waits, as a slow target would make it.
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    blocker = portal_db_connection(settings.DATABASES["default"]["NAME"])
    with blocker.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", [object_lock_id(lock_key(ds))])
    try:
        grant = submit_and_approve(analyst, owner, target_source)
        wait_for(lambda: ProvisioningJob.objects.filter(grant=grant, status=JobStatus.RUNNING).exists(), timeout=20)
        celery_worker.kill()
        killed = time.monotonic()
    finally:
        blocker.close()  # releases the advisory lock
    job = ProvisioningJob.objects.get(grant=grant)
    assert job.status == JobStatus.RUNNING and job.lease_expires_at is not None  # the dead worker left it there
    celery_worker.start()
    wait_for(lambda: ProvisioningJob.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED, timeout=40)
    recovered_in = time.monotonic() - killed
    print(f"\nkilled worker's job done {recovered_in:.1f} s after the kill (worker restart included)")
    assert recovered_in < LEASE_S + SWEEP_S + 15  # the new worker's start takes a few seconds here
    grant.refresh_from_db()
    assert grant.status == GrantStatus.ACTIVE
    role = grant_principal(grant).db_role
    assert target_can(target_source.database, role, "SELECT * FROM finance.ledger")
    conn = admin_connection(target_source.database)
    with conn.cursor() as cur:
        # Exactly one SELECT entry on the table, held by the access package; the role holds none
        # itself and is a member of that package once.
        cur.execute(
            "SELECT r.rolname, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a"
            " JOIN pg_roles r ON r.oid = a.grantee"
            " WHERE c.oid = 'finance.ledger'::regclass AND r.rolname NOT IN (current_user, 'postgres')"
            " AND (r.rolname = %s OR r.oid IN (SELECT roleid FROM pg_auth_members WHERE member = to_regrole(%s)))",
            [role, role],
        )
        held = cur.fetchall()
        assert len(held) == 1 and held[0][0] != role and "_p_" in held[0][0] and held[0][1] == "SELECT", held
    conn.close()
    assert ProvisioningJob.objects.get(pk=job.pk).attempts == 2
    assert AuditEvent.objects.filter(action="grant.activated", target_id=str(grant.pk)).count() == 1
    requeued = AuditEvent.objects.get(action="provisioning_job.requeued", target_id=str(job.pk))
    assert requeued.metadata["was"] == JobStatus.RUNNING and "lease" in requeued.reason


def test_a_live_workers_long_job_keeps_its_lease_and_is_never_run_twice(target_source, analyst, owner):
    """A job that waits three times its lease on a busy object is still its worker's: the heartbeat
    renews the lease, the sweeper (every second) leaves it alone, no second attempt is made."""
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    blocker = portal_db_connection(settings.DATABASES["default"]["NAME"])
    with blocker.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", [object_lock_id(lock_key(ds))])
    try:
        grant = submit_and_approve(analyst, owner, target_source)
        job = wait_for(lambda: ProvisioningJob.objects.filter(grant=grant, status=JobStatus.RUNNING).first(), 20)
        first_lease = job.lease_expires_at
        time.sleep(3 * LEASE_S)
        job.refresh_from_db()
        assert (job.status, job.attempts) == (JobStatus.RUNNING, 1)
        assert job.lease_expires_at > first_lease + dt.timedelta(seconds=2 * LEASE_S)  # renewed
    finally:
        blocker.close()
    wait_for(lambda: ProvisioningJob.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED, timeout=20)
    assert ProvisioningJob.objects.get(pk=job.pk).attempts == 1
    assert not AuditEvent.objects.filter(action="provisioning_job.requeued", target_id=str(job.pk)).exists()
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
