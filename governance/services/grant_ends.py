"""Grants end on the second: each end gets its own revocation task, and an end can move.

Why not only the minute sweep: access asked for in hours should end when it says, not up to a minute
later. When a grant is created, and whenever its end moves, a task is published with ``eta`` = the
end (:func:`grant_end_schedule`). It re-reads the grant when it runs and ends it through the same
path as the sweep (:func:`governance.services.grants.grant_expire`: status, audit, revoke job through
the provisioning engine, revocations first), so the two never double-revoke: whichever comes second
finds the grant ended and does nothing.

Why a horizon: with Redis as broker, a message waiting in a worker for its ETA is un-acknowledged,
and Redis delivers it again to another worker every ``visibility_timeout`` (Celery's documented
caveat). So only ends within ``GRANT_END_HORIZON_SECONDS`` (below the visibility timeout, checked at
start) get their task at once; :func:`grant_ends_schedule_due`, run by beat every minute, publishes
the tasks of ends entering the horizon. A key in the cache remembers which (grant, end) pairs were
published so that the scheduler publishes each once; losing it only publishes a harmless duplicate.
The minute sweep stays as the safety net for a task lost with its worker.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from audit import services as audit

from .. import durations
from ..errors import ConflictError, InvalidInput, NotPermitted, PolicyViolation
from ..managed import refuse_if_managed
from ..models import ApprovalStage, Grant, GrantStatus, JobAction
from ..policy import (
    classification_policy,
    effective_policy,
    pii_column_names,
    separation_refusal,
    stage_refusal,
)
from . import publishing
from .common import refusal_recorded
from .engine.jobs import provisioning_job_create
from .grants import grant_expire, may_revoke

log = logging.getLogger(__name__)

ENDED = (GrantStatus.EXPIRED, GrantStatus.REVOKED)


def horizon() -> dt.timedelta:
    return dt.timedelta(seconds=settings.GRANT_END_HORIZON_SECONDS)


def _key(grant_id: int, ends_at: dt.datetime) -> str:
    return f"grant-end:{grant_id}:{ends_at.timestamp():.6f}"


def _publish(grant_id: int, ends_at: dt.datetime) -> bool:
    """Publish the end's task once per (grant, end); returns whether it was published now."""
    key = _key(grant_id, ends_at)
    if not cache.add(key, 1, timeout=settings.GRANT_END_HORIZON_SECONDS * 2 + 60):
        return False
    try:
        publishing.grant_end(grant_id, ends_at)
    except Exception:
        cache.delete(key)  # not published: the next scheduler run must try again
        raise
    return True


def grant_end_schedule(grant: Grant) -> None:
    """After the current transaction commits: publish the task of the grant's end if the end is
    within the horizon (else the scheduler publishes it when it enters)."""
    grant_id, ends_at = grant.pk, grant.ends_at

    def publish() -> None:
        if ends_at - timezone.now() <= horizon():
            try:
                _publish(grant_id, ends_at)
            except Exception:  # the broker is down: the scheduler and the sweep catch up
                log.exception("Could not schedule the end of grant %s", grant_id)

    transaction.on_commit(publish)


def grant_ends_schedule_due(*, now: dt.datetime | None = None) -> int:
    """Publish the tasks of the ends entering the horizon (beat, every minute). Cheap: one indexed
    query over grants ending in the next few minutes, one cache check each."""
    now = now or timezone.now()
    due = (
        Grant.objects.filter(ends_at__gt=now, ends_at__lte=now + horizon(), revoked_at__isnull=True)
        .exclude(status__in=ENDED)
        .values_list("pk", "ends_at")
    )
    return sum(_publish(pk, ends_at) for pk, ends_at in due)


def grant_end_reached(*, grant_id: int, scheduled_end: dt.datetime, now: dt.datetime | None = None) -> str | float:
    """The task body: end the grant if its end (the one scheduled) has come. Returns what it did,
    or the seconds to wait when the timer fired a moment early (the task retries then)."""
    now = now or timezone.now()
    row = Grant.objects.filter(pk=grant_id).values("ends_at", "status", "revoked_at").first()
    if row is None or row["status"] in ENDED or row["revoked_at"] is not None:
        return "already ended"
    if row["ends_at"] > now:
        if row["ends_at"] == scheduled_end:
            return (row["ends_at"] - now).total_seconds()  # early: wait for it
        return "moved later"  # the move scheduled its own task
    return "ended" if grant_expire(grant=grant_id, now=now) is not None else "already ended"


def extension_refusal(actor: Any, grant: Grant) -> str | None:
    """Why `actor` may not lengthen `grant`, or None when they may.

    Lengthening is an approval of more time, so it follows the approval rules of the dataset's
    policy *today* (governance.policy): the person must be able to decide the policy's last stage (a
    security officer where the policy has that stage, else an owner or steward), and is never the
    requester, the grantee or anyone the grantee role reaches (separation of duties). When the policy
    now needs a stage the grant was not approved through, more time is a new request.
    """
    req = grant.source_request
    refusal = separation_refusal(
        user=actor,
        requester_id=req.requester_id if req else None,
        grantee_user_id=grant.grantee_user_id,
        grantee_role_id=grant.grantee_role_id,
    )
    if refusal:
        return refusal
    dataset = grant.dataset
    sensitive = pii_column_names(dataset.columns.filter(is_present=True).prefetch_related("tags"))
    now = effective_policy(
        dataset=dataset,
        level=grant.level,
        includes_pii=bool(set(grant.columns) & sensitive),
        grantee_is_role=grant.grantee_role_id is not None,
    )
    if req is None:  # a grant made without a request: nobody approved any stage of it
        return stage_refusal(user=actor, dataset=dataset, stage=ApprovalStage.SECURITY_OFFICER)
    added = [s for s in now.stages if s not in req.required_stages]
    if added:
        return (
            f"{dataset.qualified_name} now needs the {', '.join(ApprovalStage(s).label.lower() for s in added)} "
            "stage, which this grant was not approved through: ask for more time with a new request."
        )
    return stage_refusal(user=actor, dataset=dataset, stage=now.stages[-1] if now.stages else ApprovalStage.OWNER)


def grant_end_change(*, grant: Grant | int, ends_at: dt.datetime, actor: Any, reason: str) -> Grant:
    """Move the end of a grant in force: earlier (whoever may revoke it, the grantee included) or
    later (its approvers; the whole grant within the longest duration the policy allows). The end's
    task is scheduled again, and a JIT login's VALID UNTIL follows through a provisioning job."""
    pk = grant if isinstance(grant, int) else grant.pk
    target = grant if isinstance(grant, Grant) else (Grant, grant)
    with refusal_recorded(action="grant.change_end", actor=actor, target=target), transaction.atomic():
        try:
            locked = (
                Grant.objects.select_for_update(of=("self",))
                .select_related("dataset__classification", "dataset__source", "source_request")
                .get(pk=pk)
            )
        except Grant.DoesNotExist as exc:
            raise InvalidInput(f"There is no grant #{pk}.", field="grant") from exc
        now = timezone.now()
        if locked.status in ENDED or locked.revoked_at is not None or locked.ends_at <= now:
            raise ConflictError(f"Grant #{locked.pk} already ended.", state=locked.status)
        refuse_if_managed(locked)  # a standing grant's end is its document's `until`
        if ends_at.tzinfo is None:
            raise InvalidInput("Give the end with its time zone (e.g. 2030-01-31T18:00:00Z).", field="ends_at")
        if ends_at <= now:
            raise InvalidInput("The new end must be in the future; to end the access now, revoke it.", field="ends_at")
        old = locked.ends_at
        if ends_at == old:
            return locked
        longer = ends_at > old
        if longer and (refusal := extension_refusal(actor, locked)):
            raise NotPermitted(f"You cannot extend access to {locked.dataset.qualified_name}: {refusal}")
        if not longer and not may_revoke(actor, locked):
            raise NotPermitted(f"You cannot change the end of access to {locked.dataset.qualified_name}.")
        longest = classification_policy(locked.dataset.classification).max_duration
        if longer and ends_at - locked.starts_at > longest:
            raise PolicyViolation(
                f"{locked.dataset.classification.name} data allows at most {durations.words(longest)} of access; "
                f"this grant started {locked.starts_at.isoformat()}, so it can end at "
                f"{(locked.starts_at + longest).isoformat()} at the latest.",
                field="ends_at",
            )
        reason = (reason or "").strip()
        if not reason:
            raise InvalidInput("Say why the end of the access moves.", field="reason")
        locked.ends_at = ends_at
        locked.save(update_fields=["ends_at", "updated_at"])
        moved = durations.words(abs(ends_at - old))
        audit.record(
            action="grant.end_moved",
            actor=actor,
            target=locked,
            changes={"ends_at": [old, ends_at]},
            reason=reason,
            metadata={
                "dataset": locked.dataset.qualified_name,
                "moved": f"{moved} {'later' if longer else 'earlier'}",
                "jit_role": locked.jit_role,
            },
        )
        if locked.jit_role:
            # The login's VALID UNTIL must equal the new end: the apply job re-asserts it on the
            # target (ALTER ROLE ... VALID UNTIL) and verifies it, under the job's lock.
            provisioning_job_create(grant=locked, action=JobAction.APPLY, actor=actor)
        grant_end_schedule(locked)
    return locked
