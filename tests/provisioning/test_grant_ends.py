"""Access ends on the second: each grant's end has its own revocation task (ETA = the end), run by a
real Celery worker on a real target, with the minute sweep switched OFF, so that only that task can
end the grant. A moved end moves the task and a JIT login's VALID UNTIL (read from pg_roles).

The session's worker runs beat's expiry sweep every second; these tests stop it and start a worker
whose beat has no sweep (GRANT_EXPIRY_INTERVAL_SECONDS=0), then start the session's worker again.
Policies allow seconds here (GRANT_MIN_DURATION_FLOOR_SECONDS=1 in this process, where requests are
submitted): a grant of a few seconds is watched ending for real. "Within 5 seconds of its end" is a
correctness bound of the feature (the sweep would take up to a minute), not a speed measurement.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from audit.models import AuditEvent
from governance.models import Classification, Dataset, Grant, GrantStatus, JobStatus, ProvisioningJob
from governance.provisioning import grant_principal
from governance.services import jit
from governance.services.grant_ends import grant_end_change
from governance.services.requests import access_request_approve, access_request_submit
from tests.provisioning.conftest import Worker, admin_connection, target_can, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("seconds_allowed"),
]
SECONDS = dt.timedelta(seconds=1)
BOUND = dt.timedelta(seconds=5)  # the acceptance: a grant ends within 5 s of its end


class NoSweepWorker(Worker):
    def env(self) -> dict[str, str]:
        return {**super().env(), "GRANT_EXPIRY_INTERVAL_SECONDS": "0"}


@pytest.fixture
def worker_without_sweep(celery_worker: Worker, tmp_path: Any) -> Iterator[Worker]:
    """Only this worker consumes the test broker while the test runs: nothing but the end tasks can
    expire a grant."""
    celery_worker.stop()
    worker = NoSweepWorker(tmp_path)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        celery_worker.start()


@pytest.fixture
def seconds_allowed(classifications: Any) -> Iterator[None]:
    Classification.objects.filter(slug="confidential").update(min_duration=SECONDS)
    with override_settings(GRANT_MIN_DURATION_FLOOR_SECONDS=1):
        yield


def granted(analyst: Any, owner: Any, ds: Dataset, duration: dt.timedelta, **kw: Any) -> Grant:
    req = access_request_submit(requester=analyst, dataset=ds, justification="close", duration=duration, **kw)
    access_request_approve(access_request=req, approver=owner)
    return Grant.objects.get(source_request=req)


def status(grant: Grant) -> str:
    grant.refresh_from_db()
    return grant.status


def revoked_on_target(grant: Grant) -> ProvisioningJob | None:
    return ProvisioningJob.objects.filter(grant=grant, action="revoke", status=JobStatus.SUCCEEDED).first()


def valid_until(role: str, db: str) -> dt.datetime | None:
    conn = admin_connection(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", [role])
            row = cur.fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def assert_ended_on_time(grant: Grant) -> None:
    """Expired (not revoked by a person), by the end task, and revoked on the target within 5 s."""
    grant.refresh_from_db()
    assert grant.status == GrantStatus.EXPIRED
    expired = AuditEvent.objects.get(action="grant.expired", target_id=str(grant.pk))
    job = revoked_on_target(grant)
    assert job is not None and job.finished_at is not None
    assert expired.user_agent == "celery end_grant"  # by the end's own task, not the sweep
    assert grant.ends_at <= expired.occurred_at < grant.ends_at + BOUND, (grant.ends_at, expired.occurred_at)
    assert job.finished_at - grant.ends_at < BOUND, (grant.ends_at, job.finished_at)
    # For the record (`-s`): how long after its end the grant was marked and the privilege gone.
    print(
        f"grant #{grant.pk}: expired {(expired.occurred_at - grant.ends_at).total_seconds():.3f} s and revoked on "
        f"the target {(job.finished_at - grant.ends_at).total_seconds():.3f} s after its end"
    )


def test_a_grant_of_seconds_ends_on_its_end_without_the_sweep(target_source, analyst, owner, worker_without_sweep):
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    grant = granted(analyst, owner, ds, 6 * SECONDS)
    assert grant.ends_at - grant.starts_at == 6 * SECONDS
    wait_for(lambda: status(grant) == GrantStatus.ACTIVE)
    principal = grant_principal(grant).db_role
    db = target_source.database
    assert target_can(db, principal, "SELECT count(*) FROM finance.ledger")  # before its end

    wait_for(lambda: revoked_on_target(grant), timeout=20)
    assert not target_can(db, principal, "SELECT count(*) FROM finance.ledger")  # after it
    assert_ended_on_time(grant)


def test_a_moved_end_moves_valid_until_and_the_grant_ends_at_the_new_end(
    target_source, analyst, owner, worker_without_sweep
):
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    grant = granted(analyst, owner, ds, dt.timedelta(days=2), jit_credentials=True)
    wait_for(lambda: status(grant) == GrantStatus.ACTIVE)
    db = target_source.database
    assert valid_until(grant.jit_role, db) == grant.ends_at
    jit.grant_jit_credentials_reveal(grant=grant, actor=analyst)  # the grantee holds the password now

    # Shortened by the grantee: VALID UNTIL follows, through a job of the engine, verified.
    sooner = (timezone.now() + dt.timedelta(hours=3)).replace(microsecond=0)
    grant_end_change(grant=grant, ends_at=sooner, actor=analyst, reason="the close finished early")
    wait_for(lambda: valid_until(grant.jit_role, db) == sooner)
    moved = AuditEvent.objects.get(action="grant.end_moved")
    assert moved.actor == analyst and moved.metadata["moved"].endswith("earlier")
    # The target changes before the worker records it: wait for the record too.
    wait_for(lambda: AuditEvent.objects.filter(action="grant.jit_valid_until_moved").exists())
    grant.refresh_from_db()
    assert grant.jit_revealed_at is not None  # the password the grantee holds was kept, not reset
    assert not AuditEvent.objects.filter(action="grant.jit_password_reset").exists()

    # Lengthened by the owner: VALID UNTIL follows again.
    later = sooner + dt.timedelta(days=1)
    grant_end_change(grant=grant, ends_at=later, actor=owner, reason="audit follow-up")
    wait_for(lambda: valid_until(grant.jit_role, db) == later)

    # Shortened to a few seconds from now: it ends at that new end, its login dropped.
    soon = timezone.now() + 4 * SECONDS
    grant_end_change(grant=grant, ends_at=soon, actor=analyst, reason="done")
    wait_for(lambda: revoked_on_target(grant), timeout=20)
    assert valid_until(grant.jit_role, db) is None  # the login role is gone
    assert_ended_on_time(grant)


def test_a_lengthened_grant_does_not_end_at_its_old_end(target_source, analyst, owner, worker_without_sweep):
    ds = Dataset.objects.get(source=target_source, schema="finance", name="ledger")
    grant = granted(analyst, owner, ds, 4 * SECONDS)
    old_end = grant.ends_at
    grant_end_change(grant=grant, ends_at=old_end + dt.timedelta(hours=1), actor=owner, reason="one more run")
    wait_for(lambda: status(grant) == GrantStatus.ACTIVE)
    principal = grant_principal(grant).db_role
    db = target_source.database

    # Past the old end, the old end's task has run and left the grant alone.
    while timezone.now() < old_end + 2 * SECONDS:
        time.sleep(0.2)
    log = lambda: worker_without_sweep.log_path.read_text(errors="replace")  # noqa: E731
    wait_for(lambda: "'moved later'" in log())
    assert status(grant) == GrantStatus.ACTIVE
    assert target_can(db, principal, "SELECT count(*) FROM finance.ledger")
    assert not AuditEvent.objects.filter(action="grant.expired").exists()

    # Shortened again, to seconds from now: it ends then.
    grant_end_change(grant=grant, ends_at=timezone.now() + 3 * SECONDS, actor=analyst, reason="done early")
    wait_for(lambda: revoked_on_target(grant), timeout=20)
    assert not target_can(db, principal, "SELECT count(*) FROM finance.ledger")
    assert_ended_on_time(grant)
