"""Deadline notices: the privacy officers are emailed (through a real SMTP server) of an open
request due within 7 days, then once it is overdue, each once; the notice names the request, never
the subject."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from audit.models import AuditEvent
from notifications.models import Notification
from notifications.services.delivery import notifications_deliver
from subjects.models import RequestState, SubjectRequest
from subjects.services.deadlines import subject_request_deadlines_announce
from subjects.services.requests import subject_request_create

from .conftest import SUBJECT

pytestmark = pytest.mark.django_db


def _deliver(kind: str) -> list[Any]:
    notices = list(Notification.objects.filter(kind=kind, prepared_at__isnull=True).values_list("pk", flat=True))
    notifications_deliver(notification_ids=notices)
    return notices


def test_officers_hear_of_a_request_due_within_7_days_then_overdue_once_each(
    privacy: tuple[Any, Any], mailbox: Any, django_capture_on_commit_callbacks: Any
) -> None:
    creator, _approver = privacy
    request = subject_request_create(actor=creator, kind="erasure", identifiers={"email": SUBJECT}, reference="CASE-9")
    later = subject_request_create(actor=creator, kind="access", identifiers={"email": "bob@example.com"})
    done = subject_request_create(actor=creator, kind="erasure", identifiers={"email": "eve@example.com"})
    SubjectRequest.objects.filter(pk=later.pk).update(due_at=request.due_at + dt.timedelta(days=20))
    SubjectRequest.objects.filter(pk=done.pk).update(state=RequestState.DONE)

    with django_capture_on_commit_callbacks(execute=False):  # the worker's part runs below, here
        # 22 days after creation: nothing is due within 7 days yet.
        assert subject_request_deadlines_announce(now=request.created_at + dt.timedelta(days=22)) == 0
        soon = request.due_at - dt.timedelta(days=5)
        assert subject_request_deadlines_announce(now=soon) == 1
        assert subject_request_deadlines_announce(now=soon + dt.timedelta(hours=1)) == 0  # once
    _deliver("subject_request_due")
    mails = mailbox.wait_for(2)
    assert sorted(r for m in mails for r in m.recipients) == ["privacy1@example.com", "privacy2@example.com"]
    mail = mailbox.to("privacy1@example.com")[0]
    assert mail.subject == f"Data-subject request #{request.pk} (erasure) is due within 7 days"
    body = mail.body()
    assert f"/portal/subjects/{request.pk}/" in body
    assert SUBJECT not in body and "CASE-9" not in body

    mailbox.clear()
    with django_capture_on_commit_callbacks(execute=False):
        after = request.due_at + dt.timedelta(hours=2)
        assert subject_request_deadlines_announce(now=after) == 1
        assert subject_request_deadlines_announce(now=after + dt.timedelta(days=1)) == 0  # once
    _deliver("subject_request_overdue")
    overdue = mailbox.wait_for(2)
    assert {m.subject for m in overdue} == {f"Data-subject request #{request.pk} (erasure) is OVERDUE"}
    assert all(SUBJECT not in m.body() for m in overdue)

    notices = AuditEvent.objects.filter(action="subject_request.deadline_notice").order_by("pk")
    assert [(e.target_id, e.metadata["threshold"]) for e in notices] == [
        (str(request.pk), "due"),
        (str(request.pk), "overdue"),
    ]
    assert not Notification.objects.filter(context__request__in=[later.pk, done.pk]).exists()
