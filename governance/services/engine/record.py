"""Recording success: the jobs' outcomes, their grants' new status and one audit event per job, in one
portal transaction for the whole group, whatever its size.

- an apply whose grant is still in force makes it **Active** (`grant.activated`, with the executed
  SQL); one revoked or ended meanwhile is verified but not activated (its revocation converges);
- a revoke records `grant.revocation_verified` (the grant's status was set when it was revoked);
- a membership job records `role_membership.provisioned`;
- a portal Role's grant that became Active queues its members' membership jobs on the source;
- each grant event carries the group's size and target time in `metadata.batch` (1 for a job
  that ran alone);
- a source marked unreachable that just answered is marked reachable again (after the commit),
  which releases its waiting jobs.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from psycopg2 import sql
from psycopg2.extras import execute_values

from audit import services as audit
from notifications.models import Kind as Notice
from notifications.services.outbox import notify
from observability import instruments

from ...models import (
    DataSource,
    Grant,
    GrantStatus,
    JobAction,
    JobStatus,
    ProvisioningJob,
    RoleMembership,
    SourceHealth,
    SourcePrincipal,
)
from .. import source_health
from .attempt import Attempt
from .jobs import membership_jobs_create


def source_unreachable_flag() -> Exists:
    """Annotation for a Grant query: whether its source is marked unreachable right now (read in
    the query that locks the grants anyway, so a success learns it for free)."""
    return Exists(SourceHealth.objects.filter(source_id=OuterRef("dataset__source_id"), reachable=False))


def succeeded(source: DataSource, attempts: list[Attempt], *, target_ms: float, elapsed_ms: float) -> None:
    """Record the group's successful jobs (see the module docstring)."""
    now = timezone.now()
    with transaction.atomic():
        for a in attempts:
            job = a.job
            job.status = JobStatus.SUCCEEDED
            job.statements = a.statements
            job.last_error = ""
            job.finished_at = now
            job.duration_ms = a.target_ms if a.target_ms is not None else target_ms / len(attempts)
        on_grants = [a for a in attempts if a.job.grant_id is not None]
        on_memberships = [a for a in attempts if a.job.grant_id is None]
        events = []
        unreachable = False
        if on_grants:
            batch = {"jobs": len(attempts), "target_ms": round(target_ms, 2), "ms": round(elapsed_ms, 2)}
            grant_events, unreachable = _grants(source, on_grants, now, batch)
            events += grant_events
        if on_memberships:
            unreachable = unreachable or SourceHealth.objects.filter(source_id=source.pk, reachable=False).exists()
            events += [
                audit.build(
                    action="role_membership.provisioned",
                    actor=None,
                    target=a.job,
                    metadata={
                        "membership": a.job.membership_id,
                        "source": source.pk,
                        "sql": a.job.statements,
                        "target_ms": a.job.duration_ms,
                    },
                )
                for a in on_memberships
            ]
        _save_succeeded([a.job for a in attempts])
        audit.record_many(events)
    for a in attempts:
        a.outcome = "succeeded"
    if unreachable:  # this group just reached the source: it answers (released after the commit)
        source_health.source_recovered(source_id=source.pk, via="job")


def _grants(
    source: DataSource, attempts: list[Attempt], now: dt.datetime, batch: dict[str, float]
) -> tuple[list[Any], bool]:
    """The grants' side, inside the transaction: their status, their principals' rows, their events
    and the membership jobs of newly active role grants. Returns the events and whether the source
    is marked unreachable."""
    locked = {
        g.pk: g
        for g in Grant.objects.select_for_update(of=("self",))
        .filter(pk__in={a.job.grant_id for a in attempts})
        .only("pk", "status", "revoked_at", "ends_at", "grantee_role_id", "dataset_id", "created_at")
        .annotate(source_unreachable=source_unreachable_flag())
    }
    applied = {a.job.grant_id for a in attempts if a.job.action == JobAction.APPLY}
    activate = [pk for pk, g in locked.items() if pk in applied and g.revoked_at is None and g.ends_at > now]
    Grant.objects.filter(pk__in=activate).update(status=GrantStatus.ACTIVE, verified_at=now, updated_at=now)
    if others := set(locked) - set(activate):  # revoked, or revoked or ended meanwhile: verified, not active
        Grant.objects.filter(pk__in=others).update(verified_at=now, updated_at=now)
    new_principals = {
        a.ref.db_role: SourcePrincipal(
            source=source, user_id=a.grant.grantee_user_id, role_id=a.grant.grantee_role_id, db_role=a.ref.db_role,
            managed=a.ref.managed,
        )
        for a in attempts
        if a.ref is not None and a.ref.existing is None
    }  # fmt: skip
    if new_principals:
        SourcePrincipal.objects.bulk_create(new_principals.values(), ignore_conflicts=True)
    events = []
    for a in attempts:
        grant = locked[a.grant.pk]
        became_active = grant.pk in activate and grant.status != GrantStatus.ACTIVE
        events.append(
            audit.build(
                action="grant.activated" if a.job.action == JobAction.APPLY else "grant.revocation_verified",
                actor=None,
                target=a.grant,
                changes={"status": [grant.status, GrantStatus.ACTIVE]} if became_active else {},
                metadata={
                    "job": a.job.pk,
                    "attempt": a.job.attempts,
                    "target_ms": a.job.duration_ms,
                    "sql": a.statements,
                    "batch": batch,
                },
            )
        )
    if became := sorted(pk for pk, g in locked.items() if pk in activate and g.status != GrantStatus.ACTIVE):
        notify(Notice.ACCESS_ACTIVE, grants=became)  # one outbox row for the group
        # A grant is created by its approval: approval to access verified on the target, per grant,
        # observed once committed (in this process; /metrics adds the processes up: operations.md).
        latencies = [max((now - locked[pk].created_at).total_seconds(), 0.0) for pk in became]
        transaction.on_commit(lambda: _observe(latencies))
    # A role's group role now carries privileges on this source: its members must be in it.
    newly_active_roles = {
        g.grantee_role_id
        for g in locked.values()
        if g.grantee_role_id and g.pk in activate and g.status != GrantStatus.ACTIVE
    }
    if newly_active_roles:
        for membership in RoleMembership.objects.active().filter(role_id__in=newly_active_roles):
            membership_jobs_create(membership=membership, sources=[source])
    return events, any(g.source_unreachable for g in locked.values())


def _observe(latencies: list[float]) -> None:
    for seconds in latencies:
        instruments.approval_to_verified.observe(seconds)


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
