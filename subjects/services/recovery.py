"""Stalled executions: a request left `executing` by a worker that died is moved on.

An execution makes progress dataset by dataset: each dataset's outcome row (`executed_at`) is
written as it ends. A request `executing` whose claim (`executing_since`) and newest dataset outcome
are both older than SUBJECTS_EXECUTION_LEASE_SECONDS is taken as stalled: it moves to
`needs_attention` with its audit event (`subject_request.execution_stalled`, the datasets' outcomes
counted), so that it can be previewed and approved again. Datasets already done keep their outcome.

Why nothing is half-done on a source: each dataset is changed in one source transaction that counts,
changes and proves before COMMIT (subjects.engine.target.apply), so a worker killed mid-dataset
leaves that dataset untouched (the server rolls the transaction back when the connection drops).
The one window: a worker killed after a dataset's COMMIT and before its outcome row is written
leaves the rows erased and the dataset `pending`; the new preview counts 0 rows there.

A worker that was only slow, not dead, and ends after the move records its end
(`subject_request.executed_late`) without changing the state (requests.finish).
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from audit import services as audit

from ..models import DatasetOutcome, RequestState, SubjectRequest


def subject_requests_recover_stalled(*, now: dt.datetime | None = None) -> int:
    """Move every execution stalled past the lease to `needs_attention` (beat task); returns how many."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.SUBJECTS_EXECUTION_LEASE_SECONDS)
    stalled = (
        SubjectRequest.objects.filter(state=RequestState.EXECUTING)
        .filter(Q(executing_since__lt=cutoff) | Q(executing_since__isnull=True))
        .annotate(progress=Max("datasets__executed_at"))
        .filter(Q(progress__isnull=True) | Q(progress__lt=cutoff))
    )
    moved = 0
    for pk in list(stalled.order_by("pk").values_list("pk", flat=True)):
        with transaction.atomic():
            request = SubjectRequest.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
            if request is None or request.state != RequestState.EXECUTING:
                continue  # finished meanwhile, or another run holds it
            newest = request.datasets.aggregate(newest=Max("executed_at"))["newest"]
            if (request.executing_since and request.executing_since >= cutoff) or (newest and newest >= cutoff):
                continue  # progressed meanwhile
            outcomes = list(request.datasets.values_list("outcome", flat=True))
            request.state = RequestState.NEEDS_ATTENTION
            request.error = (
                "The execution stopped without finishing (its worker was lost): the datasets done keep their"
                " outcome; preview and approve again to finish."
            )
            request.finished_at = now
            request.save(update_fields=["state", "error", "finished_at"])
            audit.record(
                action="subject_request.execution_stalled",
                actor=None,
                target=request,
                outcome="failed",
                reason=request.error,
                metadata={
                    "executing_since": request.executing_since.isoformat() if request.executing_since else None,
                    "lease_seconds": settings.SUBJECTS_EXECUTION_LEASE_SECONDS,
                    "datasets": len(outcomes),
                    **{k: outcomes.count(k) for k in DatasetOutcome.values if outcomes.count(k)},
                },
            )
            moved += 1
    return moved
