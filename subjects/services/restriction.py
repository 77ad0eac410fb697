"""Restriction (Art. 18): a recorded, acknowledged marker — NOT an enforcement on the sources.

Executing an approved restriction records, per dataset the preview matched (at least one row), that
the subject's rows there are restricted (outcome *notified*: waiting for its owner); the dataset's
owners and stewards see it in ``/api/v1/subject-restrictions/`` (dataset, rows matched, how they
match, the deadline — never the identifiers) and **acknowledge** it once they have stopped processing
those rows. The request stays *needs attention* until every dataset is acknowledged, then is *done*.

What it does NOT do: hide the rows from grantees, block queries or jobs, or check that the owner did
anything; the portal records who said so and when (docs/subjects.md). Nothing on the source changes.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.roles import is_governance_admin
from audit import services as audit
from governance.errors import ConflictError, NotPermitted
from governance.selectors.catalog import datasets_stewarded_by
from governance.services.common import refusal_recorded

from ..models import DatasetOutcome, RequestAction, RequestDataset, RequestState, SubjectRequest
from ..permissions import may_set_handling
from .plan import SourcePlan
from .requests import _lock, finish


def restrict(
    request: SubjectRequest, actor: Any, plans: list[SourcePlan], previewed: dict[int, RequestDataset]
) -> SubjectRequest:
    from .execution import _record

    waiting = 0
    for row in previewed.values():
        if row.matched:
            _record(row, actor, DatasetOutcome.NOTIFIED)
            waiting += 1
        else:
            _record(row, actor, DatasetOutcome.SKIPPED, reason="None of the subject's rows.")
    if waiting:
        return finish(
            request,
            actor,
            RequestState.NEEDS_ATTENTION,
            f"Waiting for the owners of {waiting} dataset(s) to acknowledge the restriction.",
            waiting=waiting,
        )
    return finish(request, actor, RequestState.DONE)


def restrictions_for(user: Any) -> QuerySet[RequestDataset]:
    """The restrictions on datasets `user` stewards (governance admins: all), newest first."""
    qs = RequestDataset.objects.filter(action=RequestAction.RESTRICT).exclude(outcome=DatasetOutcome.PENDING)
    qs = qs.select_related("dataset__source", "request", "acknowledged_by").order_by("-executed_at", "-pk")
    if not getattr(user, "is_active", False):
        return qs.none()
    if getattr(user, "is_superuser", False) or is_governance_admin(user):
        return qs
    return qs.filter(dataset__in=datasets_stewarded_by(user))


def subject_restriction_acknowledge(*, actor: Any, row: RequestDataset) -> RequestDataset:
    """The dataset's owner or steward says the subject's rows there are no longer processed."""
    with refusal_recorded(action="subject_request.acknowledge", actor=actor, target=row.request):
        with transaction.atomic():
            request = _lock(row.request)
            row = RequestDataset.objects.select_for_update(of=("self",)).select_related("dataset").get(pk=row.pk)
            if not may_set_handling(actor, row.dataset):
                raise NotPermitted(f"Only an owner or steward of {row.dataset.qualified_name} acknowledges it.")
            if row.action != RequestAction.RESTRICT or row.outcome != DatasetOutcome.NOTIFIED:
                raise ConflictError("This dataset has no restriction waiting for acknowledgement.")
            row.outcome, row.acknowledged_by, row.acknowledged_at = DatasetOutcome.DONE, actor, timezone.now()
            row.save(update_fields=["outcome", "acknowledged_by", "acknowledged_at"])
            audit.record(
                action="subject_request.dataset_acknowledged",
                actor=actor,
                target=request,
                metadata={"dataset": row.dataset_id, "action": row.action, "matched_at_preview": row.matched},
            )
            left = request.datasets.filter(outcome=DatasetOutcome.NOTIFIED).count()
        if not left and request.state == RequestState.NEEDS_ATTENTION:
            finish(request, actor, RequestState.DONE, expected=RequestState.NEEDS_ATTENTION, acknowledged=True)
    return row
