"""The access request lifecycle: submit → pending stage(s) → approved | denied | cancelled | expired.

Every transition locks the request row (`select_for_update`), checks the current state and raises
ConflictError when the transition is not allowed: two approvers acting at once produce exactly one
transition, and the loser is told what happened instead of silently succeeding.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import services as audit
from notifications.models import Kind as Notice
from notifications.services.outbox import notify

from .. import durations, policy, policy_treatments
from ..backends import backend_for
from ..errors import ConflictError, DomainError, InvalidInput, NotPermitted, PolicyViolation
from ..models import (
    STAGE_ORDER,
    AccessLevel,
    AccessRequest,
    Approval,
    ApprovalStage,
    Column,
    Dataset,
    Decision,
    RequestState,
    Role,
    RoleMembership,
    SourcePrincipal,
    Treatment,
)
from ..selectors.requests import treatment_options_for
from ..selectors.row_filters import row_filter_snapshot
from .common import refusal_recorded
from .jit import jit_request_check
from .request_grants import approved_digest, close_request, request_approve_final, request_metadata
from .treatments import governed_schema_ensure


def _locked(access_request: AccessRequest | int) -> AccessRequest:
    pk = access_request if isinstance(access_request, int) else access_request.pk
    # `of=("self",)`: lock only the request row, not the joined dataset/classification rows.
    try:
        return (
            AccessRequest.objects.select_for_update(of=("self",))
            .select_related("dataset__classification", "dataset__owner", "requester", "grantee_user", "grantee_role")
            .get(pk=pk)
        )
    except AccessRequest.DoesNotExist as exc:
        raise InvalidInput(f"There is no access request #{pk}.", field="access_request") from exc


def _next_stage(access_request: AccessRequest, decided: Iterable[str]) -> str:
    done = set(decided)
    for stage in access_request.required_stages:
        if stage not in done:
            return stage
    return ""


def access_request_submit(
    *,
    requester: Any,
    dataset: Dataset,
    level: str = AccessLevel.READ,
    justification: str = "",
    duration: dt.timedelta | None = None,
    longest_allowed: bool = False,
    columns: Iterable[Column] = (),
    grantee_user: Any = None,
    grantee_role: Role | None = None,
    jit_credentials: bool = False,
    treatments: dict[str, str] | None = None,
    row_filter: Any = None,
) -> AccessRequest:
    """Ask for access. The effective policy is computed and snapshotted on the request; a request
    the policy auto-approves becomes a Grant at once. `jit_credentials` also asks for a temporary
    database login (users only; see governance.services.jit). `treatments` chooses, per PII column
    covered, raw / masked / pseudonymised / nulled within the policy (unnamed: its default)."""
    columns = list(columns)
    justification = (justification or "").strip()
    with refusal_recorded(
        action="access_request.submit",
        actor=requester,
        target=dataset,
        metadata={
            "level": level,
            "duration_days": duration.total_seconds() / 86400 if duration else None,
            "duration": durations.words(duration),
        },
    ):
        with transaction.atomic():
            if requester is None or not requester.is_active:
                raise NotPermitted("Only an active user can request access.")
            if level not in AccessLevel.values:
                raise InvalidInput(
                    f"Unknown access level {level!r}; use {', '.join(AccessLevel.values)}.", field="level"
                )
            if grantee_user is not None and grantee_role is not None:
                raise InvalidInput("Request access for a user or for a role, not both.", field="grantee")
            if grantee_role is None and grantee_user is None:
                grantee_user = requester
            if grantee_user is not None and not grantee_user.is_active:
                raise InvalidInput(f"{grantee_user.username} is not an active user.", field="grantee_user")
            if grantee_role is not None:
                member = RoleMembership.objects.active().filter(role=grantee_role, user=requester).exists()
                if not member and grantee_role.owner_id != requester.pk:
                    raise NotPermitted(
                        f"Only the owner or a member of role {grantee_role.name} can request access for it."
                    )
            dataset = Dataset.objects.select_related("classification", "source").get(pk=dataset.pk)
            policy.check_aggregate_level(
                dataset=dataset,
                level=level,
                columns=columns,
                grantee_is_role=grantee_role is not None,
                jit_credentials=jit_credentials,
            )
            if jit_credentials:
                jit_request_check(dataset=dataset, grantee_user=grantee_user, grantee_role=grantee_role)
            if not dataset.is_present:
                raise PolicyViolation(
                    f"{dataset.qualified_name} no longer exists in {dataset.source.name}; it cannot be requested.",
                    field="dataset",
                )
            if dataset.source.provisions and backend_for(dataset.source).needs_mapped_principal:
                subject = {"user": grantee_user} if grantee_user is not None else {"role": grantee_role}
                if not SourcePrincipal.objects.filter(source=dataset.source, **subject).exists():
                    raise PolicyViolation(
                        f"{grantee_user or grantee_role} has no IAM role or user on {dataset.source.name}, so an "
                        "approval could not be applied: ask a governance admin to map one first.",
                        field="dataset",
                    )
            duplicate = AccessRequest.objects.filter(
                dataset=dataset,
                level=level,
                state=RequestState.PENDING,
                grantee_user=grantee_user,
                grantee_role=grantee_role,
            ).first()
            if duplicate is not None:
                raise ConflictError(
                    f"Request #{duplicate.pk} for the same access is already pending.", request_id=duplicate.pk
                )
            filtered = {}
            if row_filter is not None:
                filtered = row_filter_snapshot(
                    row_filter=row_filter, dataset=dataset, grantee_user=grantee_user, grantee_role=grantee_role
                )
            scope = policy.resolve_columns(
                dataset=dataset, requested=columns, level=level, policy_source=dataset.classification
            )
            effective = policy.effective_policy(
                dataset=dataset,
                level=level,
                includes_pii=bool(scope.pii_included),
                grantee_is_role=grantee_role is not None,
            )
            options = treatment_options_for(dataset, scope.pii_included)
            chosen = policy_treatments.resolve_treatments(options=options, chosen=treatments, level=level)
            effective = policy_treatments.with_treatments(effective, options=options, treatments=chosen)
            if any(t != Treatment.RAW for t in chosen.values()):
                # A governed view reads the table as its owner role: a row filter (row-level
                # security, a policy per package) would not bind the grantee through it.
                if row_filter is not None or dataset.row_security is not None:
                    raise InvalidInput(
                        "Column treatments and row filters cannot be combined yet: ask for the filtered rows"
                        " with raw columns, or for treated columns of a table without row filters.",
                        field="treatments",
                    )
                governed_schema_ensure(source=dataset.source, actor=requester)
            # Both checks run so that the requester learns every problem at once, each on its field.
            problems: list[DomainError] = []
            granted_for = dt.timedelta(0)
            try:
                policy.check_justification(policy=effective, justification=justification)
            except DomainError as exc:
                problems.append(exc)
            try:
                granted_for = policy.resolve_duration(
                    policy=effective, duration=duration, longest_allowed=longest_allowed
                )
            except DomainError as exc:
                problems.append(exc)
            if len(problems) == 1:
                raise problems[0]
            if problems:
                raise PolicyViolation(
                    " ".join(p.message for p in problems),
                    errors={p.field or "": p.message for p in problems},
                )

            snapshot = effective.as_dict() | {
                "pii_included": scope.pii_included,
                "pii_excluded": scope.pii_excluded,
                "longest_allowed": longest_allowed,
            }
            fields = {
                "requester": requester,
                "grantee_user": grantee_user,
                "grantee_role": grantee_role,
                "dataset": dataset,
                "level": level,
                "covered_columns": scope.covered,
                "treatments": chosen,
                "justification": justification,
                "duration": granted_for,
                "state": RequestState.PENDING,
                "current_stage": effective.stages[0] if effective.stages else "",
                "policy": snapshot,
                "jit_credentials": jit_credentials,
                "row_filter": row_filter,
                "row_filter_snapshot": filtered,
            }
            try:
                # The check above gives the friendly message; the constraint settles the race
                # between two submits that both passed it.
                with transaction.atomic():
                    access_request = AccessRequest.objects.create(**fields)
            except IntegrityError as exc:
                raise ConflictError("The same access is already pending in another request.") from exc
            if columns:
                access_request.columns.set(columns)
            audit.record(
                action="access_request.submitted",
                actor=requester,
                target=access_request,
                reason=justification,
                metadata=request_metadata(access_request)
                | {
                    "duration_days": granted_for.total_seconds() / 86400,
                    "duration": durations.words(granted_for),
                    "stages": list(effective.stages),
                    "columns": scope.covered,
                    "pii_included": scope.pii_included,
                    "jit_credentials": jit_credentials,
                }
                | ({"treatments": chosen} if chosen else {})
                | ({"row_filter": filtered} if filtered else {}),
            )
            if effective.auto_approve and not effective.stages:
                request_approve_final(access_request, approver=None, comment="Auto-approved by policy.")
            else:
                notify(
                    Notice.REQUEST_WAITING,
                    actor=requester,
                    request=access_request.pk,
                    stage=access_request.current_stage,
                )
    return access_request


def access_request_approve(
    *,
    access_request: AccessRequest | int,
    approver: Any,
    stage: str | None = None,
    comment: str = "",
    epsilon: Decimal | None = None,
) -> AccessRequest:
    """Approve the current stage. `stage` is the stage the approver saw: if the request has moved
    on meanwhile (someone else decided it), the approver gets a ConflictError, not a second decision.
    `epsilon` is the privacy budget of an aggregate request (policy.check_epsilon); each stage may
    lower it, never raise it."""
    target = access_request if isinstance(access_request, AccessRequest) else (AccessRequest, access_request)
    with refusal_recorded(action="access_request.approve", actor=approver, target=target, metadata={"stage": stage}):
        with transaction.atomic():
            req = _locked(access_request)
            current = _check_decidable(req, stage)
            policy.ensure_may_decide(user=approver, access_request=req, stage=current)
            _ensure_policy_not_stricter(req)
            _set_epsilon(req, epsilon)
            digest = approved_digest(req)
            earlier = [a for a in req.approvals.all() if a.plan_digest and a.plan_digest != digest]
            if earlier:
                # The dataset changed after an earlier stage was approved: that approver did not
                # see what would now be applied. Fail safe; the requester submits again.
                raise ConflictError(
                    f"What this request would grant changed after the {ApprovalStage(earlier[0].stage).label.lower()} "
                    "stage was approved (the dataset's columns, tags or classification changed); "
                    "cancel it and submit a new request.",
                    state=req.state,
                )
            Approval.objects.create(
                request=req,
                stage=current,
                approver=approver,
                decision=Decision.APPROVED,
                comment=comment,
                plan_digest=digest,
            )
            following = _next_stage(req, [*(a.stage for a in req.approvals.all()), current])
            if following:
                req.current_stage = following
                req.save(update_fields=["current_stage", "updated_at"])
                audit.record(
                    action="access_request.stage_approved",
                    actor=approver,
                    target=req,
                    changes={"current_stage": [current, following]},
                    reason=comment,
                    metadata=request_metadata(req) | {"stage": current},
                )
                notify(Notice.REQUEST_WAITING, actor=approver, request=req.pk, stage=following)
            else:
                request_approve_final(req, approver=approver, comment=comment)
    return req


def _set_epsilon(req: AccessRequest, epsilon: Decimal | None) -> None:
    if epsilon is None:
        return
    if req.level != AccessLevel.AGGREGATE:
        raise InvalidInput("A privacy budget (epsilon) is set on aggregate access only.", field="epsilon")
    epsilon = policy.check_epsilon(epsilon)
    if req.epsilon is None or epsilon < req.epsilon:
        req.epsilon = epsilon
        req.save(update_fields=["epsilon", "updated_at"])


def _ensure_policy_not_stricter(req: AccessRequest) -> None:
    """The request's policy was snapshotted at submission; if the dataset's policy became stricter
    since (its effective classification rose because a view now reads stricter data, a column it
    covers became sensitive), approving it under the old rules would grant what the new ones refuse.
    Fail safe: the requester submits again under today's rules."""
    dataset = req.dataset
    what = f"{dataset.qualified_name} is now {dataset.classification.name}"
    try:
        scope = policy.resolve_columns(
            dataset=dataset, requested=req.columns.all(), level=req.level, policy_source=dataset.classification
        )
        # Marked aggregates only (or no longer) while the request waited: its level may be refused now.
        policy.check_aggregate_level(
            dataset=dataset,
            level=req.level,
            columns=req.columns.all(),
            grantee_is_role=req.grantee_role_id is not None,
            jit_credentials=req.jit_credentials,
        )
    except DomainError as exc:  # a named column vanished, or the rules refuse it now
        raise ConflictError(
            f"The dataset or its policy changed while this request waited ({what}: {exc.message}); "
            "cancel it and submit a new request.",
            state=req.state,
        ) from None
    now = policy.effective_policy(
        dataset=dataset,
        level=req.level,
        includes_pii=bool(scope.pii_included),
        grantee_is_role=req.grantee_role_id is not None,
    )
    problems = []
    options = treatment_options_for(dataset, scope.pii_included)
    try:
        chosen = policy_treatments.resolve_treatments(options=options, chosen=req.treatments, level=req.level)
        now = policy_treatments.with_treatments(now, options=options, treatments=chosen)
    except DomainError as exc:
        problems.append(exc.message.removeprefix("treatments: "))
    added = [s for s in now.stages if s not in req.required_stages]
    if added:
        problems.append(f"it needs the {', '.join(ApprovalStage(s).label.lower() for s in added)} stage too")
    if req.duration > now.max_duration:
        problems.append(f"it allows at most {durations.words(now.max_duration)}")
    if req.duration < now.min_duration:
        problems.append(f"it needs at least {durations.words(now.min_duration)}")
    if now.justification_required and not req.justification.strip():
        problems.append("it requires a justification")
    if not req.covered_columns and scope.covered:
        problems.append(f"its sensitive columns must now be named ({', '.join(scope.pii_excluded)} would be included)")
    elif newly_sensitive := sorted(set(req.covered_columns) & set(scope.pii_excluded)):
        problems.append(f"{', '.join(newly_sensitive)} now hold sensitive data and must be named")
    if problems:
        raise ConflictError(
            f"The policy became stricter while this request waited ({what}; {'; '.join(problems)}): "
            "cancel it and submit a new request.",
            state=req.state,
        )


def _check_decidable(req: AccessRequest, stage: str | None) -> str:
    if req.state != RequestState.PENDING:
        raise ConflictError(
            f"Request #{req.pk} is already {req.state}; only pending requests can be decided.", state=req.state
        )
    current = req.current_stage
    if stage is not None and stage != current:
        if stage not in STAGE_ORDER:
            raise InvalidInput(f"Unknown approval stage {stage!r}.", field="stage")
        raise ConflictError(
            f"Request #{req.pk} is now waiting for the {ApprovalStage(current).label.lower()} stage, "
            f"not the {ApprovalStage(stage).label.lower()} stage; someone decided it meanwhile.",
            state=req.state,
            current_stage=current,
        )
    return current


def access_request_deny(
    *, access_request: AccessRequest | int, approver: Any, comment: str, stage: str | None = None
) -> AccessRequest:
    """Deny at the current stage; the reason is required and is shown to the requester."""
    target = access_request if isinstance(access_request, AccessRequest) else (AccessRequest, access_request)
    with refusal_recorded(action="access_request.deny", actor=approver, target=target, metadata={"stage": stage}):
        with transaction.atomic():
            req = _locked(access_request)
            current = _check_decidable(req, stage)
            policy.ensure_may_decide(user=approver, access_request=req, stage=current)
            comment = (comment or "").strip()
            if not comment:
                raise InvalidInput("Say why you deny the request; the requester will see it.", field="comment")
            Approval.objects.create(
                request=req, stage=current, approver=approver, decision=Decision.DENIED, comment=comment
            )
            close_request(
                req,
                state=RequestState.DENIED,
                action="access_request.denied",
                actor=approver,
                reason=comment,
                metadata={"stage": current},
            )
            notify(Notice.REQUEST_DECIDED, actor=approver, request=req.pk, decision="denied", comment=comment)
    return req


def access_request_cancel(*, access_request: AccessRequest | int, actor: Any, reason: str = "") -> AccessRequest:
    """The requester (or the user it grants to) withdraws a pending request."""
    target = access_request if isinstance(access_request, AccessRequest) else (AccessRequest, access_request)
    with refusal_recorded(action="access_request.cancel", actor=actor, target=target), transaction.atomic():
        req = _locked(access_request)
        if actor is None or actor.pk not in {req.requester_id, req.grantee_user_id}:
            raise NotPermitted("Only the requester can cancel a request.")
        if req.state != RequestState.PENDING:
            raise ConflictError(
                f"Request #{req.pk} is already {req.state}; only pending requests can be cancelled.",
                state=req.state,
            )
        close_request(req, state=RequestState.CANCELLED, action="access_request.cancelled", actor=actor, reason=reason)
    return req


def access_request_expire(*, access_request: AccessRequest | int, reason: str = "") -> AccessRequest:
    """The system gives up on a request nobody decided in time (called by the scheduled job)."""
    with transaction.atomic():
        req = _locked(access_request)
        if req.state != RequestState.PENDING:
            raise ConflictError(f"Request #{req.pk} is already {req.state}.", state=req.state)
        close_request(req, state=RequestState.EXPIRED, action="access_request.expired", actor=None, reason=reason)
    return req


def access_requests_expire_stale(*, now: dt.datetime | None = None, max_age: dt.timedelta | None = None) -> int:
    """Expire every pending request older than `max_age` (ACCESS_REQUEST_PENDING_MAX_AGE_DAYS).

    Each request is expired in its own transaction so one conflict (someone approving it at this
    very moment) does not hold back the rest; the approver's transition wins and this one skips.
    """
    now = now or timezone.now()
    max_age = max_age or dt.timedelta(days=settings.ACCESS_REQUEST_PENDING_MAX_AGE_DAYS)
    cutoff = now - max_age
    days = max_age.total_seconds() / 86400
    expired = 0
    stale_ids = list(
        AccessRequest.objects.pending().filter(submitted_at__lt=cutoff).order_by("pk").values_list("pk", flat=True)
    )
    for pk in stale_ids:
        try:
            access_request_expire(access_request=pk, reason=f"Nobody decided it within {days:g} days.")
        except ConflictError:
            continue
        expired += 1
    return expired
