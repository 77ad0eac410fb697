"""From an approved request to a Grant: the one path every grant made from a request goes through.

`request_approve_final` closes a request whose last stage passed (or that the policy auto-approves)
and turns it into a Grant; `request_grant_create` is the Grant half of it: the row (the desired
state), `grant.created`, the provisioning job that applies it at once and the task of its end
(governance/services/grant_ends.py). `emergency_request_grant` is the same Grant half for access
that skips the approval stages under an explicit emergency policy (the break-glass app, docs/
break-glass.md): its request is recorded as approved at once, with that policy as its snapshot.

Callers hold the transaction; everything here is written in it, audit events included.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from audit import services as audit
from notifications.models import Kind as Notice
from notifications.services.outbox import notify

from .. import durations, policy
from ..backends import backend_for, has_backend, plan_digest
from ..errors import InvalidInput, NotPermitted, PolicyViolation
from ..models import (
    UNPROVISIONED_LEVELS,
    AccessLevel,
    AccessRequest,
    Dataset,
    Grant,
    GrantStatus,
    JobAction,
    RequestState,
    SourcePrincipal,
)
from .engine.jobs import provisioning_job_create
from .grant_ends import grant_end_schedule
from .jit import jit_request_check, jit_role_name

# The key of a request's policy snapshot that marks access granted without approval stages.
EMERGENCY = "emergency"


def request_metadata(access_request: AccessRequest) -> dict[str, Any]:
    return {
        "dataset": access_request.dataset.qualified_name,
        "dataset_id": access_request.dataset_id,
        "level": access_request.level,
        "grantee": access_request.grantee_display,
        "classification": access_request.policy.get("classification"),
    }


def close_request(
    req: AccessRequest, *, state: str, action: str, actor: Any, reason: str, metadata: dict[str, Any] | None = None
) -> None:
    """Move a pending request to a final state and record it (the caller holds the row lock)."""
    req.state = state
    req.current_stage = ""
    req.decided_at = timezone.now()
    req.decision_reason = reason
    req.save(update_fields=["state", "current_stage", "decided_at", "decision_reason", "updated_at"])
    audit.record(
        action=action,
        actor=actor,
        target=req,
        changes={"state": [RequestState.PENDING, state]},
        reason=reason,
        metadata=request_metadata(req) | (metadata or {}),
    )


def request_approve_final(access_request: AccessRequest, *, approver: Any, comment: str) -> Grant:
    """The last stage passed: the request is approved and its Grant (the desired state) is created."""
    close_request(
        access_request,
        state=RequestState.APPROVED,
        action="access_request.auto_approved" if approver is None else "access_request.approved",
        actor=approver,
        reason=comment,
    )
    if approver is not None:  # an auto-approval is told by "your access is active"
        notify(Notice.REQUEST_DECIDED, actor=approver, request=access_request.pk, decision="approved", comment=comment)
    return request_grant_create(access_request, actor=approver)


def request_grant_create(access_request: AccessRequest, *, actor: Any) -> Grant:
    """The Grant of an approved request: created, recorded, queued for the engine, its end scheduled."""
    now = access_request.decided_at or timezone.now()
    digest = approved_digest(access_request)
    aggregate = access_request.level == AccessLevel.AGGREGATE
    grant = Grant.objects.create(
        # Aggregate access holds nothing on the target (no job): it is in force at once, with its budget.
        status=GrantStatus.ACTIVE if aggregate else GrantStatus.APPROVED,
        epsilon=policy.check_epsilon(access_request.epsilon) if aggregate else None,
        plan_digest=digest,
        grantee_user=access_request.grantee_user,
        grantee_role=access_request.grantee_role,
        dataset=access_request.dataset,
        level=access_request.level,
        columns=access_request.covered_columns,
        treatments=access_request.treatments,
        starts_at=now,
        ends_at=now + access_request.duration,
        reason=access_request.justification,
        source_request=access_request,
        row_filter_snapshot=access_request.row_filter_snapshot,
    )
    if access_request.jit_credentials:
        # The name contains the grant's id, so it is set once the row exists.
        grant.jit_role = jit_role_name(grant)
        grant.save(update_fields=["jit_role"])
    audit.record(
        action="grant.created",
        actor=actor,
        target=grant,
        metadata=request_metadata(access_request)
        | {"ends_at": grant.ends_at, "columns": grant.columns, "source_request": access_request.pk}
        | ({"treatments": grant.treatments} if grant.treatments else {})
        | ({"jit_role": grant.jit_role} if grant.jit_role else {})
        | ({"epsilon": str(grant.epsilon)} if aggregate else {})
        | ({EMERGENCY: True} if access_request.policy.get(EMERGENCY) else {}),
    )
    provisioning_job_create(grant=grant, action=JobAction.APPLY, actor=actor)
    grant_end_schedule(grant)  # its end revokes it on the second (governance/services/grant_ends.py)
    return grant


def approved_digest(access_request: AccessRequest) -> str:
    """The digest of the plan the approvers saw (SQL, or an IAM policy), empty for other sources."""
    if not has_backend(access_request.dataset.source) or access_request.level in UNPROVISIONED_LEVELS:
        return ""
    return plan_digest(access_request)


def emergency_request_grant(
    *,
    requester: Any,
    dataset: Dataset,
    columns: list[str],
    duration: dt.timedelta,
    reason: str,
    emergency_policy: dict[str, Any],
    jit_credentials: bool = False,
) -> Grant:
    """Read access for `requester` at once, without approval stages, under `emergency_policy`.

    The caller (the break-glass app) has decided that the emergency policy allows it; this checks
    what any grant needs (an active person, a dataset that exists, a principal the source can
    grant to), records the request as approved at once (`access_request.emergency_approved`) with
    the emergency policy as its snapshot (marked ``emergency: true``, which is how a grant made so
    is recognised), and creates the Grant through `request_grant_create`. `jit_credentials` asks
    for a temporary database login with it, checked as a request's is (governance/services/jit.py).
    Runs in the caller's transaction.
    """
    if requester is None or not requester.is_active:
        raise NotPermitted("Only an active user can be granted access.")
    if duration <= dt.timedelta(0):
        raise InvalidInput("The duration must be positive.", field="hours")
    dataset = Dataset.objects.select_related("classification", "source").get(pk=dataset.pk)
    if not dataset.is_present:
        raise PolicyViolation(
            f"{dataset.qualified_name} no longer exists in {dataset.source.name}; it cannot be granted.",
            field="dataset",
        )
    mapped_only = dataset.source.provisions and backend_for(dataset.source).needs_mapped_principal
    if mapped_only and not SourcePrincipal.objects.filter(source=dataset.source, user=requester).exists():
        raise PolicyViolation(
            f"{requester} has no IAM role or user on {dataset.source.name}: ask a governance admin to map one.",
            field="dataset",
        )
    if jit_credentials:
        jit_request_check(dataset=dataset, grantee_user=requester, grantee_role=None)
    now = timezone.now()
    snapshot = {
        **emergency_policy,
        EMERGENCY: True,
        "classification": dataset.classification.slug,
        "stages": [],
    }
    access_request = AccessRequest.objects.create(
        requester=requester,
        grantee_user=requester,
        dataset=dataset,
        level=AccessLevel.READ,
        covered_columns=list(columns),
        treatments={},
        justification=reason,
        duration=duration,
        jit_credentials=jit_credentials,
        state=RequestState.APPROVED,
        current_stage="",
        decided_at=now,
        decision_reason=reason,
        policy=snapshot,
    )
    audit.record(
        action="access_request.emergency_approved",
        actor=requester,
        target=access_request,
        reason=reason,
        metadata=request_metadata(access_request)
        | {"duration": durations.words(duration), "columns": list(columns), EMERGENCY: True},
    )
    return request_grant_create(access_request, actor=requester)
