"""The engine's one loop: claim -> lock -> apply -> verify -> record, for one job or many.

`provisioning_jobs_run(job_ids)` is what both tasks call: `run_provisioning_job` with one id (every
job published on its own: an approval, a revocation, a membership change, a retry) and
`run_provisioning_batch` with up to PROVISIONING_BATCH_SIZE (a `batched_publishing()` block). A
single job is a run of one; nothing else differs.

1. **Claim** the jobs in one statement (claim.py) and hold their leases (leases.py).
2. Per source: if it is known not to answer, its jobs **wait** for it without touching it (their
   claim's attempt given back). Otherwise its jobs form **groups**: the jobs its backend can
   combine (`batch_apply`: PostgreSQL grant jobs that need nothing beyond the converge) share one
   group; every other job (a JIT login, ending sessions, an AWS policy, a membership) is a group
   of its own. The step of the job's kind (tables.py, policies.py, memberships.py) does the work.
3. Per group: **prepare** (principals, plan digests: a job that must not run fails now, alone);
   take the portal **locks** of all its objects in key order; **apply** and **verify** in one
   target transaction; **record** what succeeded in one portal transaction (record.py) and apply
   the failure policy (failures.py) to each job that did not; release the locks.
4. A group whose target transaction fails as a whole cannot say which of its jobs was at fault:
   if the source did not answer, its jobs wait for it; otherwise they are queued again (the
   attempt given back) and published one message each, so each gets its own outcome in a group of
   one. A group of one goes straight to the failure policy.

The per-object locks are held from before the desired state is read until the outcome is
recorded, so the next job on the same object always sees this one's result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db.models import F
from django.utils import timezone

from ...backends import Converges, backend_for
from ...models import DataSource, JobAction, JobStatus, ProvisioningJob
from ...provisioners import postgres as pg
from .. import source_health
from ..leases import HEARTBEAT
from ..locks import object_locks
from ..publishing import publish
from . import failures, record
from .attempt import Attempt, Step
from .claim import claim
from .memberships import Memberships
from .policies import Policies
from .tables import Tables

log = logging.getLogger(__name__)

STEPS: dict[Converges, type[Step]] = {Converges.OBJECT: Tables, Converges.PRINCIPAL_POLICY: Policies}


@dataclass
class RunOutcome:
    """How the claimed jobs of a run left it (jobs not claimed are not in it)."""

    attempts: list[Attempt] = field(default_factory=list)

    def ids(self, outcome: str) -> list[int]:
        return [a.job.pk for a in self.attempts if a.outcome == outcome]

    def as_dict(self) -> dict[str, Any]:
        counts = {name: len(self.ids(name)) for name in ("succeeded", "failed", "retrying", "parked", "split")}
        return {**counts, "target_ms": round(sum(a.target_ms or 0.0 for a in self.attempts), 1)}


def provisioning_job_run(*, job_id: int) -> ProvisioningJob | None:
    """Run one job (a run of one). Returns the job with its new status (succeeded, failed, or queued:
    retrying later or waiting for its source), or None when it was not claimed (missing, finished,
    waiting for its source or running elsewhere)."""
    outcome = provisioning_jobs_run(job_ids=[job_id])
    return outcome.attempts[0].job if outcome.attempts else None


def provisioning_jobs_run(*, job_ids: list[int]) -> RunOutcome:
    """Run jobs (see the module docstring). Never raises for a job's failure: the failure policy
    records it; a transient one publishes the job's retry, due after its backoff."""
    attempts = claim(job_ids)
    with HEARTBEAT.hold(a.job.pk for a in attempts):
        for source, of_source in _by_source(attempts):
            # Its source is known not to answer: the jobs wait without touching it (re-checked under
            # the source's health lock; if it answers after all, they run).
            if source_health.known_unreachable(source) and source_health.jobs_park(
                source_id=source.pk, job_ids=[a.job.pk for a in of_source]
            ):
                _parked(of_source)
                continue
            for step, group in _groups(source, of_source):
                _run_group(source, step, group)
    return RunOutcome(attempts)


def _by_source(attempts: list[Attempt]) -> Iterator[tuple[DataSource, list[Attempt]]]:
    by_source: dict[int, list[Attempt]] = {}
    for a in attempts:
        by_source.setdefault(a.source.pk, []).append(a)
    for of_source in by_source.values():
        yield of_source[0].source, of_source


def _groups(source: DataSource, attempts: list[Attempt]) -> Iterator[tuple[Step, list[Attempt]]]:
    """The jobs the source's backend can combine share one group; any other job has its own."""
    backend = backend_for(source)
    shared: list[Attempt] = []
    step_of_shared: Step | None = None
    for a in attempts:
        kind = Memberships if a.job.action == JobAction.MEMBERSHIP else STEPS[backend.converges]
        step = kind(source)
        if backend.batch_apply and not step.alone(a):
            step_of_shared = step_of_shared or step
            shared.append(a)
        else:
            yield step, [a]
    if step_of_shared is not None:
        yield step_of_shared, shared


def _run_group(source: DataSource, step: Step, group: list[Attempt]) -> None:
    started = time.perf_counter()
    try:
        step.prepare(group)
    except Exception as exc:  # noqa: BLE001 - recorded by the failure policy (a crash is logged there)
        _failed_whole(source, group, exc)
    refused = [a for a in group if a.error is not None]  # touched nothing: no lock needed
    for a in refused:
        failures.settle(source, a, duration_ms=_ms(started))
    runnable = [a for a in group if a.error is None and a.outcome is None]
    if runnable:
        with object_locks(step.lock_keys(runnable)):
            target_ms = 0.0
            try:
                target_ms = step.converge(runnable)
            except Exception as exc:  # noqa: BLE001 - recorded by the failure policy (a crash is logged there)
                _failed_whole(source, runnable, exc)
            done = [a for a in runnable if a.error is None and a.outcome is None]
            if done:
                try:
                    record.succeeded(source, done, target_ms=target_ms, elapsed_ms=_ms(started))
                except Exception:
                    if len(done) == 1:
                        raise  # the job stays running: once its lease passes, the sweeper queues it again
                    log.exception("Recording a provisioning group on source %s failed; its jobs run alone", source.name)
                    _split(done)
            for a in runnable:
                if a.error is not None and a.outcome is None:
                    failures.settle(source, a, duration_ms=_ms(started))
    for a in group:
        failures.after_failed(a)


def _failed_whole(source: DataSource, group: list[Attempt], exc: Exception) -> None:
    """The group's work failed as a whole (its target transaction rolled back, or a step crashed).
    One job: its error, for the failure policy. Several: they wait for the source if it did not
    answer, else each runs again on its own."""
    if len(group) == 1:
        group[0].error = exc
        return
    if (
        isinstance(exc, pg.ProvisioningError)
        and exc.unreachable
        and source_health.jobs_park(
            source_id=source.pk,
            job_ids=[a.job.pk for a in group],
            error=exc.message,
            attempted_at=group[0].job.started_at,
        )
    ):
        log.warning("Provisioning group on source %s: the source does not answer, its jobs wait", source.name)
        _parked(group)
        return
    if isinstance(exc, pg.ProvisioningError):
        log.warning(
            "Provisioning group of %s jobs on source %s failed, each runs alone: %s", len(group), source.name, exc
        )
    else:
        log.error("Provisioning group on source %s crashed, each job runs alone", source.name, exc_info=exc)
    _split(group)


def _split(group: list[Attempt]) -> None:
    """Queue the jobs again (the attempt is not counted) and publish one message each."""
    ids = [a.job.pk for a in group]
    ProvisioningJob.objects.filter(pk__in=ids, status=JobStatus.RUNNING).update(
        status=JobStatus.QUEUED, attempts=F("attempts") - 1, published_at=timezone.now()
    )
    for a in group:
        a.job.status = JobStatus.QUEUED
        a.outcome = "split"
    publish([(pk, None) for pk in ids])


def _parked(attempts: list[Attempt]) -> None:
    for a in attempts:
        a.job.status = JobStatus.QUEUED
        a.outcome = "parked"


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
