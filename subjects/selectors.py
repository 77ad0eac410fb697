"""Reads of the data-subject requests app: who sees which requests, and their deadlines."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from accounts.roles import sees_everything

from .models import (
    DatasetHandling,
    Relationship,
    RequestDataset,
    RequestState,
    SubjectExport,
    SubjectIdentifier,
    SubjectRequest,
)
from .permissions import handles_subject_requests

OPEN = [s for s in RequestState.values if s != RequestState.DONE]


def may_see_requests(user: Any) -> bool:
    """Privacy officers, and those who read everything (officers, admins, auditors). Nobody else:
    that a person asked is itself personal data."""
    return handles_subject_requests(user) or sees_everything(user)


def requests_visible_to(user: Any) -> QuerySet[SubjectRequest]:
    qs = SubjectRequest.objects.select_related(
        "created_by", "approved_by", "executed_by", "previewed_by", "corrections_set_by"
    )
    return qs if may_see_requests(user) else qs.none()


def requests_due(user: Any, *, within_days: int = 7, now: dt.datetime | None = None) -> QuerySet[SubjectRequest]:
    """Open requests due within `within_days` (overdue ones included), soonest first: the dashboard's list."""
    now = now or timezone.now()
    return requests_visible_to(user).filter(state__in=OPEN, due_at__lte=now + dt.timedelta(days=within_days))


def requests_overdue(user: Any, *, now: dt.datetime | None = None) -> QuerySet[SubjectRequest]:
    return requests_visible_to(user).filter(state__in=OPEN, due_at__lt=now or timezone.now())


def identifiers_of_dataset(dataset_id: int) -> QuerySet[SubjectIdentifier]:
    return SubjectIdentifier.objects.filter(column__dataset_id=dataset_id).select_related("column", "decided_by")


def relationships_of_dataset(dataset_id: int) -> QuerySet[Relationship]:
    return Relationship.objects.filter(dataset_id=dataset_id).select_related("referenced")


def handling_of(dataset_id: int) -> DatasetHandling | None:
    return DatasetHandling.objects.filter(dataset_id=dataset_id).first()


def request_for(user: Any, pk: int) -> SubjectRequest | None:
    """One request, if `user` may see it (None: the same 404 whether it exists or not)."""
    return requests_visible_to(user).filter(pk=pk).first()


def datasets_of(request: SubjectRequest) -> QuerySet[RequestDataset]:
    """A request's datasets with what the preview found and what execution did, source by source."""
    return request.datasets.select_related("dataset", "dataset__source").order_by(
        "dataset__source__name", "dataset__schema", "dataset__name", "pk"
    )


def requests_filed_by(user: Any) -> QuerySet[SubjectRequest]:
    """The self-service requests `user` filed about themselves (state and deadline: their own list)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return SubjectRequest.objects.none()
    return SubjectRequest.objects.filter(self_service=True, created_by=user).order_by("-created_at", "-pk")


def export_waiting(request: SubjectRequest) -> bool:
    """Whether an access request's export is still there for its one download."""
    return request.export_downloaded_at is None and SubjectExport.objects.filter(request=request).exists()
