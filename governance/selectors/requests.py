"""Who sees which requests and grants. Lists go through here; the queryset is the gate."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
from guardian.shortcuts import get_users_with_perms

from accounts.roles import SECURITY_OFFICERS, is_security_officer, sees_everything

from ..models import AccessRequest, ApprovalStage, Grant, RequestState, RoleMembership
from .catalog import datasets_approvable_by


def access_requests_visible_to(user: Any) -> QuerySet[AccessRequest]:
    """Officers, governance admins and auditors see all requests; others see the requests they made,
    that grant to them, or on datasets they may approve."""
    qs = AccessRequest.objects.select_related(
        "requester", "grantee_user", "grantee_role", "dataset__source", "dataset__classification"
    )
    if sees_everything(user):
        return qs
    return qs.filter(
        Q(requester=user) | Q(grantee_user=user) | Q(dataset__in=datasets_approvable_by(user).values("pk"))
    )


def access_requests_awaiting(user: Any) -> QuerySet[AccessRequest]:
    """Pending requests whose current stage `user` may decide (their approval inbox).

    Separation of duties is applied here too: a user's own requests never wait for them.
    """
    stage_filter = Q(current_stage=ApprovalStage.OWNER, dataset__in=datasets_approvable_by(user).values("pk"))
    if is_security_officer(user):
        stage_filter |= Q(current_stage=ApprovalStage.SECURITY_OFFICER)
    return (
        AccessRequest.objects.select_related(
            "requester", "grantee_user", "grantee_role", "dataset__source", "dataset__classification"
        )
        .filter(state=RequestState.PENDING)
        .filter(stage_filter)
        .exclude(requester=user)
        .exclude(grantee_user=user)
        .exclude(grantee_role__owner=user)
        .exclude(grantee_role__in=RoleMembership.objects.active().filter(user=user).values("role_id"))
        .exclude(approvals__approver=user)
    )


def access_request_deciders(access_request: AccessRequest) -> list[Any]:
    """The people whose inbox holds this request now, for its current stage (who is told that it
    waits for them). The inverse of :func:`access_requests_awaiting`, and decided by it, so that
    who may decide which stage has one home: the candidates (the dataset's owners and stewards for
    the owner stage, the security officers for theirs) are kept when the request is in their inbox."""
    if access_request.state != RequestState.PENDING:
        return []
    candidates: QuerySet[Any]
    if access_request.current_stage == ApprovalStage.OWNER:
        candidates = get_users_with_perms(  # type: ignore[assignment]  # a queryset without attach_perms
            access_request.dataset, only_with_perms_in=["approve_access"], with_group_users=True, with_superusers=False
        )
    elif access_request.current_stage == ApprovalStage.SECURITY_OFFICER:
        candidates = get_user_model().objects.filter(groups__name=SECURITY_OFFICERS)
    else:
        return []
    people = candidates.filter(is_active=True).distinct().order_by("pk")
    return [p for p in people if access_requests_awaiting(p).filter(pk=access_request.pk).exists()]


def grants_visible_to(user: Any) -> QuerySet[Grant]:
    qs = Grant.objects.select_related(
        "grantee_user", "grantee_role", "dataset__source", "dataset__classification", "revoked_by", "source_request"
    )
    if sees_everything(user):
        return qs
    return qs.filter(Q(grantee_user=user) | Q(dataset__in=datasets_approvable_by(user).values("pk")))


def treatment_options_for(dataset: Any, columns: Any) -> list[Any]:
    """`policy_treatments.treatment_options` for the dataset's source: raw only where its backend
    cannot enforce a treatment (the one place that asks)."""
    from .. import policy_treatments
    from ..backends import backend_for, has_backend

    enforceable = not has_backend(dataset.source) or backend_for(dataset.source).enforces_treatments
    return policy_treatments.treatment_options(dataset=dataset, columns=columns, enforceable=enforceable)


def request_preview_for(
    *,
    requester: Any,
    dataset: Any,
    level: str,
    columns: list[Any],
    grantee_role: Any = None,
    treatments: dict[str, str] | None = None,
    row_filter: Any = None,
) -> dict[str, Any]:
    """What a request would cover and run if submitted now, computed as the submit service does
    (columns, effective policy) on an unsaved request. Raises DomainError where the service would."""
    from .. import policy, policy_treatments
    from ..models import ApprovalStage, GovernedSchema, Treatment
    from .plans import plan_preview

    scope = policy.resolve_columns(
        dataset=dataset, requested=columns, level=level, policy_source=dataset.classification
    )
    effective = policy.effective_policy(
        dataset=dataset, level=level, includes_pii=bool(scope.pii_included), grantee_is_role=grantee_role is not None
    )
    options = treatment_options_for(dataset, scope.pii_included)
    chosen = policy_treatments.resolve_treatments(options=options, chosen=treatments, level=level)
    effective = policy_treatments.with_treatments(effective, options=options, treatments=chosen)
    draft = AccessRequest(
        requester=requester,
        grantee_user=None if grantee_role is not None else requester,
        grantee_role=grantee_role,
        dataset=dataset,
        level=level,
        covered_columns=scope.covered,
        treatments=chosen,
    )
    if row_filter is not None:
        from .row_filters import row_filter_snapshot

        draft.row_filter_snapshot = row_filter_snapshot(
            row_filter=row_filter, dataset=dataset, grantee_user=draft.grantee_user, grantee_role=grantee_role
        )
    # A pseudonymised column needs the source's key, made when the first such request is submitted
    # (a preview writes nothing): until then the plan is shown on the submitted request.
    keyless = (
        Treatment.PSEUDONYMISED in chosen.values()
        and not GovernedSchema.objects.filter(source_id=dataset.source_id).exclude(pseudonym_key_encrypted="").exists()
    )
    plan = [] if keyless else plan_preview(draft)
    return {
        "covered": scope.covered,
        "pii_included": scope.pii_included,
        "pii_excluded": scope.pii_excluded,
        "stages": [ApprovalStage(s).label for s in effective.stages],
        "auto_approve": effective.auto_approve and not effective.stages,
        "plan": plan,
        "treatments": chosen,
    }
