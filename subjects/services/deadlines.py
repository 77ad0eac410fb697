"""Deadline notices: the privacy officers hear of an open request due within 7 days, and again
once it is overdue (docs/subjects.md, "Deadlines").

Each notice is sent once per request, threshold and deadline: its outbox row carries a
de-duplication key (`subject-request-due:<id>:<deadline>`), so a second run of the beat task finds
it recorded and sends nothing, and an extended deadline is announced again. The notice says which
request (number, kind, deadline), never who the subject is. Each notice recorded has its audit event
(`subject_request.deadline_notice`) in the same transaction.
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone

from audit import services as audit
from notifications.models import Kind as Notice
from notifications.services.outbox import notify

from ..models import RequestState, SubjectRequest

OPEN = [s for s in RequestState.values if s != RequestState.DONE]
DUE_WITHIN = dt.timedelta(days=7)


def subject_request_deadlines_announce(*, now: dt.datetime | None = None) -> int:
    """Tell the privacy officers of every open request due within 7 days or overdue (once each);
    returns how many notices were recorded."""
    now = now or timezone.now()
    recorded = 0
    due = SubjectRequest.objects.filter(state__in=OPEN, due_at__lte=now + DUE_WITHIN).order_by("due_at", "pk")
    for request in due.only("pk", "kind", "due_at", "state"):
        overdue = request.due_at < now
        threshold = "overdue" if overdue else "due"
        with transaction.atomic():
            pk = notify(
                Notice.SUBJECT_REQUEST_OVERDUE if overdue else Notice.SUBJECT_REQUEST_DUE,
                dedup_key=f"subject-request-{threshold}:{request.pk}:{request.due_at:%Y%m%dT%H%M%S}",
                request=request.pk,
                request_kind=request.kind,
                due_at=request.due_at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            )
            if pk is None:
                continue  # announced already
            audit.record(
                action="subject_request.deadline_notice",
                actor=None,
                target=request,
                metadata={"threshold": threshold, "due_at": request.due_at.isoformat(), "notification": pk},
            )
            recorded += 1
    return recorded
