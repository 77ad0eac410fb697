"""Batches of plain applies on one source: one target transaction, one verification query and one
portal transaction for up to PROVISIONING_BATCH_SIZE jobs.

A single job costs a few milliseconds, most of it round trips (claim, desired state, lock, apply,
verify, record). When many grants are approved at once (a bulk decision, an import, the sweeper
after an outage: see `batched_publishing()`), paying that per job would make 10,000 grants take
minutes; a batch pays it once per few hundred jobs, and de-duplicates CREATE ROLE and GRANT USAGE
per (principal, schema). The batch keeps every guarantee of the single path:

- the jobs are claimed with their rows locked (SKIP LOCKED: a job another worker holds is left to
  it), the per-object locks of all their tables are taken (in key order, so a batch and a single
  job never wait on each other in a cycle) before the desired state is read;
- each job's plan digest is checked against what was approved;
- the desired state per (principal, table) is the union of the grants already active and the
  batch's own grants, exactly as a single job computes it;
- the Grant becomes Active only when the set-based verification of its pair passes.

Anything the batch cannot finish cleanly is handed back to the single-job path, which gives each
job its own precise outcome (retries for transient errors, "plan changed", the verification
difference): a digest mismatch or a JIT login (before the target is touched), a pair that fails
verification, or the whole batch when the target transaction fails (it rolled back: nothing of
it is left on the target).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from psycopg2 import sql
from psycopg2.extras import execute_values

from audit import services as audit
from notifications.models import Kind as Notice
from notifications.services.outbox import notify

from .. import provisioning
from ..backends import backend_for, plan_digest
from ..models import (
    DataSource,
    Grant,
    GrantStatus,
    JobAction,
    JobStatus,
    ProvisioningJob,
    RoleMembership,
    SourcePrincipal,
)
from ..models.grants import in_force_q
from ..provisioners import pg_packages as pgp
from ..provisioners import postgres as pg
from . import source_health
from .leases import HEARTBEAT
from .locks import object_locks
from .provisioning import apply_then, membership_jobs_create, source_unreachable_flag
from .publishing import publish

log = logging.getLogger(__name__)

# A pair: the (dataset, grantee) whose privileges one converge sets; grantee = ("u", id) or ("r", id).
Pair = tuple[int, str, int]


@dataclass
class BatchOutcome:
    succeeded: list[int] = field(default_factory=list)
    handed_back: list[int] = field(default_factory=list)
    # Waiting for their source to answer (see governance/services/source_health.py).
    parked: list[int] = field(default_factory=list)
    target_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "succeeded": len(self.succeeded),
            "handed_back": len(self.handed_back),
            "parked": len(self.parked),
            "target_ms": round(self.target_ms, 1),
        }


def _pair(grant: Grant) -> Pair:
    if grant.grantee_user_id is not None:
        return (grant.dataset_id, "u", grant.grantee_user_id)
    assert grant.grantee_role_id is not None
    return (grant.dataset_id, "r", grant.grantee_role_id)


_CLAIM_SQL = """
WITH picked AS (
    SELECT id FROM {job}
    WHERE id = ANY(%(ids)s) AND action = %(apply)s AND grant_id IS NOT NULL
      AND ((status = %(queued)s AND waiting_since IS NULL)
           OR (status = %(running)s AND lease_expires_at < now())
           OR (status = %(running)s AND lease_expires_at IS NULL AND started_at < %(legacy)s))
    ORDER BY id
    FOR UPDATE SKIP LOCKED
)
UPDATE {job} AS j SET status = %(running)s, attempts = j.attempts + 1, started_at = %(now)s,
    lease_expires_at = now() + make_interval(secs => %(lease)s)
FROM picked WHERE j.id = picked.id
RETURNING j.id, j.grant_id, j.attempts
"""


def _claim(job_ids: list[int]) -> list[ProvisioningJob]:
    """Mark the batch's queued apply jobs running with a fresh lease (and those left running by a
    worker that died: their lease passed), skipping rows another worker holds locked at this
    instant and jobs waiting for their source; load their grants with what the run needs (their
    source's health included). A job another batch is running is not taken: the sweeper may
    publish a job again while its first message waits in a long queue. The same rule as the single
    path's `claimable()`. One statement (it commits on its own), then one query: this is also the
    path of a single approval, where every round trip shows in the latency."""
    now = timezone.now()
    params: dict[str, Any] = {
        "ids": list(job_ids),
        "apply": JobAction.APPLY.value,
        "queued": JobStatus.QUEUED.value,
        "running": JobStatus.RUNNING.value,
        "legacy": now - dt.timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT),
        "lease": float(settings.PROVISIONING_LEASE_SECONDS),
        "now": now,
    }
    with connection.cursor() as cur:
        cur.execute(_CLAIM_SQL.format(job=connection.ops.quote_name(ProvisioningJob._meta.db_table)), params)
        claimed = sorted(cur.fetchall())
    if not claimed:
        return []
    grants = Grant.objects.select_related(
        "dataset__source__health", "dataset__classification", "grantee_user", "grantee_role"
    ).in_bulk([grant_id for _, grant_id, _ in claimed])
    return [
        ProvisioningJob(
            pk=pk,
            grant=grants[grant_id],
            action=JobAction.APPLY,
            status=JobStatus.RUNNING,
            attempts=attempts,
            started_at=now,
        )
        for pk, grant_id, attempts in claimed
    ]


def hand_back(job_ids: list[int], *, publish_them: bool = True) -> None:
    """Give claimed jobs to the single-job path: queued again (the attempt is not counted) and
    published one message each."""
    if not job_ids:
        return
    ProvisioningJob.objects.filter(pk__in=job_ids, status=JobStatus.RUNNING).update(
        status=JobStatus.QUEUED, attempts=F("attempts") - 1, published_at=timezone.now()
    )
    if publish_them:
        publish([(pk, None) for pk in job_ids])


def provisioning_jobs_run_batch(*, job_ids: list[int], publish_handed_back: bool = True) -> BatchOutcome:
    """Run a batch of apply jobs (see the module docstring). Never raises for a job's failure: a
    job that does not succeed here is handed back to the single-job path (published, or only
    queued again when `publish_handed_back` is false: the caller runs it itself), or parked when
    its source does not answer."""
    outcome = BatchOutcome()
    jobs = _claim(job_ids)
    with HEARTBEAT.hold(job.pk for job in jobs):
        _run_claimed(jobs, outcome)
        hand_back(outcome.handed_back, publish_them=publish_handed_back)
    return outcome


def _run_claimed(jobs: list[ProvisioningJob], outcome: BatchOutcome) -> None:
    by_source: dict[int, list[ProvisioningJob]] = defaultdict(list)
    for job in jobs:
        assert job.grant is not None
        if job.grant.jit_role or not backend_for(job.grant.dataset.source).batch_apply:
            outcome.handed_back.append(job.pk)  # a login role, or an IAM policy: the single path's business
        else:
            by_source[job.grant.dataset.source_id].append(job)
    for source_jobs in by_source.values():
        source = source_jobs[0].grant.dataset.source  # type: ignore[union-attr]
        ids = [job.pk for job in source_jobs]
        # Its source is known not to answer: the jobs wait without touching it (re-checked under
        # the source's health lock; if it answers after all, they run).
        if source_health.known_unreachable(source) and source_health.jobs_park(source_id=source.pk, job_ids=ids):
            outcome.parked += ids
            continue
        try:
            _run_source(source, source_jobs, outcome)
        except Exception as exc:
            # The target transaction failed (it rolled back) or recording failed: every job of the
            # source not recorded yet goes to the single path, which retries and reports each; or,
            # when the source did not answer, waits for it.
            done = set(outcome.succeeded) | set(outcome.handed_back)
            pending = [pk for pk in ids if pk not in done]
            if (
                isinstance(exc, pg.ProvisioningError)
                and exc.unreachable
                and source_health.jobs_park(
                    source_id=source.pk, job_ids=pending, error=exc.message, attempted_at=source_jobs[0].started_at
                )
            ):
                log.warning("Provisioning batch on source %s: the source does not answer, jobs wait", source.name)
                outcome.parked += pending
                continue
            if not isinstance(exc, pg.ProvisioningError):
                log.exception("Provisioning batch on source %s crashed", source.name)
            else:
                log.warning("Provisioning batch on source %s failed, jobs handed back: %s", source.name, exc)
            outcome.handed_back += pending


def _run_source(source: DataSource, jobs: list[ProvisioningJob], outcome: BatchOutcome) -> None:
    grants = [job.grant for job in jobs if job.grant is not None]
    principals = provisioning.grant_principals(source, grants)
    facts = provisioning.dataset_facts({g.dataset_id for g in grants})
    runnable: list[ProvisioningJob] = []
    own: dict[int, tuple[pg.Desired, pg.Plan]] = {}
    for job in jobs:
        grant = job.grant
        assert grant is not None
        ref = principals[grant.pk]
        if ref.taken_by:
            outcome.handed_back.append(job.pk)  # the single path fails it: role name taken
            continue
        mine = provisioning.own_desired(grant, ref)
        plan = pgp.plan_converge(mine, managed_principal=ref.managed, database=source.database)
        if grant.plan_digest and (plan_digest(grant, ref, facts[grant.dataset_id], plan) != grant.plan_digest):
            outcome.handed_back.append(job.pk)  # the single path fails it: "plan changed"
        else:
            runnable.append(job)
            own[grant.pk] = (mine, plan)
    if not runnable:
        return
    datasets = {job.grant.dataset_id: job.grant.dataset for job in runnable}  # type: ignore[union-attr]
    started = time.perf_counter()
    with object_locks(provisioning.lock_key(ds) for ds in datasets.values()):
        pairs, desired, plans = _desired_state(runnable, principals, own)
        plan = pg.Plan.combine([plans[p] for p in pairs])
        result, problems = apply_then(
            provisioning.target_for(source),
            plan,
            plan.lock_keys[0],
            after_commit=lambda conn: pgp.verify_check(conn, [desired[p] for p in pairs]),
        )
        outcome.target_ms += result.elapsed_ms
        failed_pairs = {p for p, found in zip(pairs, problems, strict=True) if found}
        executed = set(result.statements)
        statements: dict[Pair, list[str]] = {}
        for p in pairs:  # each executed line once, on the first pair whose plan has it
            statements[p] = [line for line in plans[p].lines if line in executed]
            executed -= set(statements[p])
        ok = [job for job in runnable if _pair(job.grant) not in failed_pairs]  # type: ignore[arg-type]
        outcome.handed_back += [job.pk for job in runnable if _pair(job.grant) in failed_pairs]  # type: ignore[arg-type]
        elapsed_ms = (time.perf_counter() - started) * 1000
        _record(source, ok, principals, statements, result.elapsed_ms, elapsed_ms)
        outcome.succeeded += [job.pk for job in ok]


def _desired_state(
    jobs: list[ProvisioningJob],
    principals: dict[int, provisioning.PrincipalRef],
    own: dict[int, tuple[pg.Desired, pg.Plan]],
) -> tuple[list[Pair], dict[Pair, pg.Desired], dict[Pair, pg.Plan]]:
    """Per pair, read with the object locks held: the grants already active plus the batch's own
    grants that are still in force (re-read: one may have been revoked since it was queued). A
    pair whose only grant is its job's own reuses the plan its digest was checked with."""
    grant_ids = {job.grant_id for job in jobs if job.grant_id is not None}
    now = timezone.now()
    by_pair: dict[Pair, dict[int, Grant]] = {}
    ref: dict[Pair, provisioning.PrincipalRef] = {}
    dataset: dict[Pair, Any] = {}
    for job in jobs:
        grant = job.grant
        assert grant is not None
        p = _pair(grant)
        by_pair.setdefault(p, {})
        ref[p] = principals[grant.pk]
        dataset[p] = grant.dataset
    users = {p[2] for p in by_pair if p[1] == "u"}
    roles = {p[2] for p in by_pair if p[1] == "r"}
    # One query: the batch's own grants as they are now, and the grants already active on the
    # same datasets for the same grantees.
    in_force = in_force_q(now)
    rows = Grant.objects.filter(
        Q(pk__in=grant_ids)
        | (
            in_force
            & Q(status=GrantStatus.ACTIVE, dataset_id__in={p[0] for p in by_pair})
            & (Q(grantee_user_id__in=users) | Q(grantee_role_id__in=roles))
        )
    ).only(
        "pk",
        "dataset_id",
        "grantee_user_id",
        "grantee_role_id",
        "level",
        "columns",
        "status",
        "revoked_at",
        "starts_at",
        "ends_at",
    )
    for grant in rows:
        p = _pair(grant)
        if p not in by_pair:
            continue
        mine = grant.pk in grant_ids
        if grant.is_in_force(now) and (mine or grant.status == GrantStatus.ACTIVE):
            by_pair[p][grant.pk] = grant
    pairs = sorted(by_pair)
    desired: dict[Pair, pg.Desired] = {}
    plans: dict[Pair, pg.Plan] = {}
    for p in pairs:
        if len(by_pair[p]) == 1 and (only := next(iter(by_pair[p]))) in own:
            desired[p], plans[p] = own[only]
            continue
        desired[p] = provisioning.desired_for(dataset=dataset[p], grants=by_pair[p].values(), principal=ref[p].db_role)
        plans[p] = pgp.plan_converge(desired[p], managed_principal=ref[p].managed, database=dataset[p].source.database)
    return pairs, desired, plans


def _record(
    source: DataSource,
    jobs: list[ProvisioningJob],
    principals: dict[int, provisioning.PrincipalRef],
    statements: dict[Pair, list[str]],
    target_ms: float,
    elapsed_ms: float,
) -> None:
    """The jobs' outcomes, their grants' new status and one audit event per grant, in one portal
    transaction (the same events as the single path, with the batch's size and target time)."""
    if not jobs:
        return
    with transaction.atomic():
        grant_ids = [job.grant_id for job in jobs if job.grant_id is not None]
        locked = {
            g.pk: g
            for g in Grant.objects.select_for_update(of=("self",))
            .filter(pk__in=grant_ids)
            .only("pk", "status", "revoked_at", "ends_at", "grantee_role_id", "dataset_id")
            .annotate(source_unreachable=source_unreachable_flag())
        }
        # This batch just reached the source: if a job elsewhere marked it unreachable meanwhile,
        # it is reachable again (released after this commits).
        source_was_unreachable = any(g.source_unreachable for g in locked.values())
        now = timezone.now()
        activate = [pk for pk, g in locked.items() if g.revoked_at is None and g.ends_at > now]
        Grant.objects.filter(pk__in=activate).update(status=GrantStatus.ACTIVE, verified_at=now, updated_at=now)
        if others := set(grant_ids) - set(activate):  # revoked or ended meanwhile: verified, not active
            Grant.objects.filter(pk__in=others).update(verified_at=now, updated_at=now)
        new_principals = {
            principals[g.pk].db_role: SourcePrincipal(
                source=source, user_id=g.grantee_user_id, role_id=g.grantee_role_id, db_role=principals[g.pk].db_role
            )
            for g in (job.grant for job in jobs)
            if g is not None and principals[g.pk].existing is None
        }
        SourcePrincipal.objects.bulk_create(new_principals.values(), ignore_conflicts=True)
        share = target_ms / len(jobs)
        events = []
        for job in jobs:
            grant = locked[job.grant_id]  # type: ignore[index]
            lines = statements[_pair(job.grant)]  # type: ignore[arg-type]
            job.status = JobStatus.SUCCEEDED
            job.statements = lines
            job.last_error = ""
            job.finished_at = now
            job.duration_ms = share
            became_active = grant.pk in activate and grant.status != GrantStatus.ACTIVE
            events.append(
                audit.build(
                    action="grant.activated",
                    actor=None,
                    target=job.grant,
                    changes={"status": [grant.status, GrantStatus.ACTIVE]} if became_active else {},
                    metadata={
                        "job": job.pk,
                        "attempt": job.attempts,
                        "target_ms": share,
                        "sql": lines,
                        "batch": {"jobs": len(jobs), "target_ms": round(target_ms, 2), "ms": round(elapsed_ms, 2)},
                    },
                )
            )
        _save_succeeded(jobs)
        audit.record_many(events)
        if became := sorted(g.pk for g in locked.values() if g.pk in activate and g.status != GrantStatus.ACTIVE):
            notify(Notice.ACCESS_ACTIVE, grants=became)  # one outbox row for the batch
        # A role's group role now carries privileges on this source: its members must be in it.
        newly_active_roles = {
            g.grantee_role_id
            for g in locked.values()
            if g.grantee_role_id and g.pk in activate and g.status != GrantStatus.ACTIVE
        }
        for membership in RoleMembership.objects.active().filter(role_id__in=newly_active_roles):
            membership_jobs_create(membership=membership, sources=[source])
    if source_was_unreachable:
        source_health.source_recovered(source_id=source.pk, via="job")


def _save_succeeded(jobs: list[ProvisioningJob]) -> None:
    """The jobs' outcome in one UPDATE ... FROM (VALUES ...): `bulk_update`'s CASE expressions cost
    Django more than the rest of a batch's recording together."""
    query = sql.SQL(
        "UPDATE {table} AS j SET status = {status}, last_error = '', statements = v.statements::jsonb,"
        " finished_at = v.finished_at::timestamptz, duration_ms = v.duration_ms::double precision"
        " FROM (VALUES %s) AS v(id, statements, finished_at, duration_ms) WHERE j.id = v.id"
    ).format(table=sql.Identifier(ProvisioningJob._meta.db_table), status=sql.Literal(str(JobStatus.SUCCEEDED)))
    rows = [(job.pk, json.dumps(job.statements), job.finished_at, job.duration_ms) for job in jobs]
    with connection.cursor() as cur:
        execute_values(cur.cursor, query, rows, page_size=1_000)
