"""How the engine finds work that nobody is doing, without a worker process: the sweeper (lost
messages, dead workers' leases), the lease heartbeat, the prober and parking at claim.

The end-to-end versions, with a real worker, a real outage and a real SIGKILL, are in
tests/provisioning/test_faults.py. Here each rule is pinned on its own, against the real portal
database and, for the prober, real connections (a port where nothing listens, a server that
answers with an error)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any
from unittest.mock import patch

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from audit.models import AuditEvent
from governance.models import Dataset, DataSource, Grant, JobAction, JobStatus, ProvisioningJob, SourceHealth
from governance.services import publishing
from governance.services.engine.run import provisioning_job_run
from governance.services.engine.sweep import provisioning_jobs_sweep
from governance.services.leases import HEARTBEAT
from governance.services.source_health import jobs_park, sources_probe
from tests.aws import free_port


def job_on(dataset: Dataset, user: Any, action: str = JobAction.APPLY, **fields: Any) -> ProvisioningJob:
    now = timezone.now()
    grant = Grant.objects.create(
        grantee_user=user, dataset=dataset, level="read", starts_at=now, ends_at=now + dt.timedelta(days=1)
    )
    job = ProvisioningJob.objects.create(grant=grant, action=action)
    if fields:
        ProvisioningJob.objects.filter(pk=job.pk).update(**fields)
        job.refresh_from_db()
    return job


def requeued(job: ProvisioningJob) -> list[str]:
    return list(
        AuditEvent.objects.filter(action="provisioning_job.requeued", target_id=str(job.pk)).values_list(
            "reason", flat=True
        )
    )


@pytest.mark.django_db
def test_the_sweeper_publishes_lost_messages_once_per_interval_and_requeues_expired_leases(
    analyst: Any, make_dataset: Callable[..., Dataset]
) -> None:
    """In one transaction (nothing reaches the broker: on-commit publishing never runs here)."""
    ds = make_dataset("ledger")
    SourceHealth.objects.create(source=ds.source, reachable=False)
    now = timezone.now()
    stuck = django_settings.PROVISIONING_STUCK_AFTER_SECONDS
    long_ago = now - dt.timedelta(seconds=stuck + 5)
    lost = job_on(ds, analyst, published_at=long_ago)  # its message vanished
    fresh = job_on(ds, analyst)  # just published: its message is on its way, maybe in a long queue
    waiting = job_on(ds, analyst, published_at=long_ago, waiting_since=long_ago)  # no message on purpose
    hour = dt.timedelta(hours=1)
    dead = job_on(ds, analyst, status=JobStatus.RUNNING, attempts=1, started_at=now, lease_expires_at=now - hour)
    live = job_on(ds, analyst, status=JobStatus.RUNNING, attempts=1, started_at=now - hour, lease_expires_at=now + hour)
    legacy = job_on(ds, analyst, status=JobStatus.RUNNING, attempts=1, started_at=now - hour)  # claimed without lease

    assert provisioning_jobs_sweep(now=now) == 3
    for job in (lost, fresh, waiting, dead, live, legacy):
        job.refresh_from_db()
    assert [j.status for j in (lost, dead, legacy)] == [JobStatus.QUEUED] * 3
    # A lost message gets a duplicate: the job keeps the start of its wait and notes the duplicate.
    assert (lost.published_at, lost.republished_at) == (long_ago, now)
    # A dead worker's job is published anew: a new wait, no duplicate yet.
    assert {(j.published_at, j.republished_at) for j in (dead, legacy)} == {(now, None)}
    assert (live.status, fresh.published_at > now, waiting.waiting_since) == (JobStatus.RUNNING, True, long_ago)
    assert "message was sent over 35 s ago" in requeued(lost)[0] and "lease" in requeued(dead)[0]
    assert requeued(fresh) == requeued(waiting) == requeued(live) == []

    # Sweeping again at once sends nothing more; a whole interval later, what was published anew
    # (the dead workers' jobs, the fresh one), but not the lost one's second duplicate: it backs off.
    assert provisioning_jobs_sweep(now=now) == 0
    assert provisioning_jobs_sweep(now=now + dt.timedelta(seconds=stuck + 1)) == 3  # dead, legacy, fresh
    assert len(requeued(lost)) == 1 and requeued(waiting) == []

    # Safety net: a job left waiting on a source that answers again (a release that never
    # happened) is released by the sweeper.
    SourceHealth.objects.filter(source=ds.source).update(reachable=True)
    provisioning_jobs_sweep(now=now)
    waiting.refresh_from_db()
    assert waiting.waiting_since is None and waiting.published_at > now


@pytest.mark.django_db
def test_duplicates_of_a_message_back_off_with_the_jobs_wait_and_a_new_publish_starts_afresh(
    analyst: Any, make_dataset: Callable[..., Dataset], settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """A queued job whose message nobody took: lost, or behind a long legitimate backlog. The first
    duplicate goes after 30 s (a lost message is recovered as fast as before); each next one waits as
    long as the job had already waited plus 30 s (60, 120, 240, 480 s...), capped at 10 minutes, so a
    backlog of N minutes costs each job a handful of duplicates instead of one every 30 s."""
    settings.PROVISIONING_STUCK_AFTER_SECONDS = 30
    settings.PROVISIONING_REPUBLISH_MAX_SECONDS = 600
    ds = make_dataset("ledger")
    t0 = timezone.now()
    revoke = job_on(ds, analyst, action=JobAction.REVOKE, published_at=t0)
    apply = job_on(ds, analyst, published_at=t0)
    both = {revoke.pk, apply.pk}
    published: list[list[tuple[int, str]]] = []

    def sweep(at: float) -> set[int]:
        """Sweep `at` seconds after t0; the jobs it sent again, in the order it publishes them."""
        sent: list[tuple[int, str]] = []
        with patch.object(publishing, "publish", lambda entries: sent.extend(entries)), \
                django_capture_on_commit_callbacks(execute=True):  # fmt: skip
            provisioning_jobs_sweep(now=t0 + dt.timedelta(seconds=at))
        published.append([(pk, "revoke" if pk == revoke.pk else "apply") for pk, _ in sent])
        return {pk for pk, _ in sent}

    assert sweep(29) == set()  # its message may well be on its way
    assert sweep(31) == both  # lost? a duplicate after 30 s, as before
    assert published[-1] == [(revoke.pk, "revoke"), (apply.pk, "apply")]  # revocations first
    assert sweep(35) == set()  # not again 5 s later, nor 30 s later (the old rule)
    assert sweep(62) == set()
    assert sweep(91) == set()  # waited 31 s when duplicated: the next waits 31 + 30 = 61 s
    assert sweep(93) == both
    assert sweep(150) == sweep(216) == set()  # waited 93 s: the next waits 123 s, until 216
    assert sweep(217) == both
    # Each duplicate is audited once, and the wait in the reason says why.
    assert sorted(requeued(revoke)) == sorted(
        f"its message was sent over {waited} s ago and not taken" for waited in (31, 93, 217)
    )

    # Capped: after a long wait the interval stops growing at PROVISIONING_REPUBLISH_MAX_SECONDS.
    hour = 3600
    assert sweep(hour) == both  # due since 217 + 247
    assert sweep(hour + 599) == set()
    assert sweep(hour + 601) == both
    assert sweep(hour + 1000) == set()

    # A new publish (the job was retried after a transient error, here due at once) starts afresh:
    # its next duplicate comes 30 s after that, whatever the old schedule said.
    later = t0 + dt.timedelta(seconds=hour + 700)
    ProvisioningJob.objects.filter(pk=apply.pk).update(published_at=later)
    assert sweep(hour + 700 + 31) == {apply.pk}
    assert sweep(hour + 700 + 62) == set()


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_renews_the_leases_of_the_jobs_its_process_runs(
    analyst: Any, make_dataset: Callable[..., Dataset], settings: Any
) -> None:
    settings.PROVISIONING_LEASE_SECONDS = 2  # renewed every 0.5 s
    HEARTBEAT.stop()  # a thread started earlier waits out the default interval: start afresh
    job = job_on(make_dataset("ledger"), analyst, status=JobStatus.RUNNING, attempts=1, started_at=timezone.now())
    ProvisioningJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() + dt.timedelta(seconds=2))
    job.refresh_from_db()
    first = job.lease_expires_at
    try:
        with HEARTBEAT.hold([job.pk]):
            time.sleep(1.4)
            job.refresh_from_db()
            renewed = job.lease_expires_at
            assert renewed is not None and first is not None
            assert renewed > first + dt.timedelta(seconds=0.4)
        assert HEARTBEAT.held() == []
        time.sleep(0.2)  # a renewal already under way when the block ended
        job.refresh_from_db()
        last = job.lease_expires_at
        time.sleep(1.1)  # no longer held: no longer renewed
        job.refresh_from_db()
        assert job.lease_expires_at == last
    finally:
        ProvisioningJob.objects.filter(pk=job.pk).update(status=JobStatus.SUCCEEDED)  # nobody runs it later


@pytest.mark.django_db
def test_a_job_claimed_while_its_source_is_down_waits_without_an_attempt(
    analyst: Any, make_dataset: Callable[..., Dataset]
) -> None:
    """Both kinds of group: a plain apply (one that could share a target transaction) and a revoke
    (here too: the engine claims and parks them alike)."""
    ds = make_dataset("ledger")
    SourceHealth.objects.create(source=ds.source, reachable=False, last_error="cannot connect: refused")
    apply, revoke = job_on(ds, analyst), job_on(ds, analyst, JobAction.REVOKE)
    for job in (apply, revoke):
        run = provisioning_job_run(job_id=job.pk)
        assert run is not None and run.status == JobStatus.QUEUED
        job.refresh_from_db()
        assert (job.status, job.attempts, job.last_error) == (JobStatus.QUEUED, 0, "cannot connect: refused")
        assert job.waiting_since is not None and job.lease_expires_at is None
        assert provisioning_job_run(job_id=job.pk) is None  # a duplicate message does not wake it
    assert AuditEvent.objects.filter(action="provisioning_job.waiting").count() == 2
    assert not AuditEvent.objects.filter(action="source.unreachable").exists()  # no transition: it was down


@pytest.mark.django_db
def test_parking_rechecks_the_source_under_its_lock(analyst: Any, make_dataset: Callable[..., Dataset]) -> None:
    """A job that saw the source down at claim, or whose failure is older than the source's
    recovery, is not parked: it runs (or retries) instead of waiting for a release already done."""
    ds = make_dataset("ledger")
    job = job_on(ds, analyst, status=JobStatus.RUNNING, attempts=1, started_at=timezone.now())
    SourceHealth.objects.create(source=ds.source, reachable=True, since=timezone.now())
    assert not jobs_park(source_id=ds.source_id, job_ids=[job.pk])  # it answers after all: run
    before = timezone.now() - dt.timedelta(seconds=5)  # the attempt began before the recovery
    assert not jobs_park(source_id=ds.source_id, job_ids=[job.pk], error="refused", attempted_at=before)
    assert SourceHealth.objects.get(source=ds.source).reachable
    job.refresh_from_db()
    assert (job.status, job.waiting_since) == (JobStatus.RUNNING, None)
    # A failure seen after the recovery marks it down again, and the job waits.
    assert jobs_park(source_id=ds.source_id, job_ids=[job.pk], error="refused", attempted_at=timezone.now())
    assert not SourceHealth.objects.get(source=ds.source).reachable
    assert AuditEvent.objects.filter(action="source.unreachable").count() == 1


@pytest.mark.django_db
def test_the_prober_releases_a_source_that_answers_and_keeps_probing_one_that_does_not(
    analyst: Any, make_dataset: Callable[..., Dataset]
) -> None:
    """Real connections: a port where nothing listens, and the test PostgreSQL server asked for a
    role it does not have. The second answers (with an error): that is all a probe asks."""
    db = django_settings.DATABASES["default"]
    down = DataSource.objects.create(name="down", host="127.0.0.1", port=free_port(), database="x", username="x")
    up = DataSource.objects.create(
        name="up",
        host=db.get("HOST") or "127.0.0.1",
        port=int(db.get("PORT") or 5432),
        database="postgres",
        username="no_such_role_for_probes",
        sslmode="disable",
    )
    long_ago = timezone.now() - dt.timedelta(minutes=5)
    for source in (down, up):
        SourceHealth.objects.create(source=source, reachable=False, since=long_ago, last_error="refused")
    on_up = make_dataset("ledger")
    Dataset.objects.filter(pk=on_up.pk).update(source=up)
    on_down = make_dataset("orders")
    Dataset.objects.filter(pk=on_down.pk).update(source=down)
    released = [job_on(on_up, analyst, JobAction.REVOKE, waiting_since=long_ago), job_on(on_up, analyst)]
    ProvisioningJob.objects.filter(pk=released[1].pk).update(waiting_since=long_ago)
    still = job_on(on_down, analyst, waiting_since=long_ago)

    results = sources_probe()
    assert results["up"] == "recovered"
    assert results["down"].startswith("cannot connect to x@127.0.0.1") and "refused" in results["down"]
    assert sources_probe() == {}  # both were probed a moment ago: the next run probes them again
    up_health, down_health = SourceHealth.objects.get(source=up), SourceHealth.objects.get(source=down)
    assert up_health.reachable and not down_health.reachable
    assert (down_health.failed_probes, down_health.last_error) == (1, results["down"])
    assert down_health.last_probe_at is not None
    for job in released:
        job.refresh_from_db()
        assert job.waiting_since is None and job.published_at > long_ago
    still.refresh_from_db()
    assert still.waiting_since == long_ago
    event = AuditEvent.objects.get(action="source.recovered")
    assert (event.target_id, event.metadata["via"], event.metadata["released"]) == (str(up.pk), "probe", 2)
