"""A request left `executing` by a worker that died is moved to `needs_attention` once its lease
passes without progress; the datasets done keep their outcome; it can be previewed and approved
again; a slow worker that ends afterwards does not overwrite that."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from subjects.models import DatasetOutcome, HandlingAction, RequestDataset, RequestState, SubjectRequest
from subjects.services.recovery import subject_requests_recover_stalled
from subjects.services.requests import (
    _claim,
    finish,
    subject_request_approve,
    subject_request_create,
    subject_request_preview,
)

from .conftest import SUBJECT

pytestmark = pytest.mark.django_db


def test_a_stalled_execution_needs_attention_and_can_run_again(
    privacy: tuple[Any, Any], make_dataset: Any, settings: Any
) -> None:
    settings.SUBJECTS_EXECUTION_LEASE_SECONDS = 600
    creator, approver = privacy
    request = subject_request_create(actor=creator, kind="erasure", identifiers={"email": SUBJECT})
    request = subject_request_preview(actor=creator, request=request)
    request = subject_request_approve(actor=approver, request=request)
    request = _claim(creator, request)  # what the worker does first; then it dies
    assert request.state == RequestState.EXECUTING and request.executing_since is not None
    done = RequestDataset.objects.create(
        request=request, dataset=make_dataset("customers"), matched=1, action=HandlingAction.ERASE
    )
    pending = RequestDataset.objects.create(
        request=request, dataset=make_dataset("orders"), matched=2, action=HandlingAction.ERASE
    )
    claimed = request.executing_since
    RequestDataset.objects.filter(pk=done.pk).update(
        outcome=DatasetOutcome.DONE, rows_affected=1, verified=True, executed_at=claimed + dt.timedelta(minutes=5)
    )

    # Within the lease of the last progress: left alone (a live worker may be on a long dataset).
    assert subject_requests_recover_stalled(now=claimed + dt.timedelta(minutes=14)) == 0
    assert SubjectRequest.objects.get(pk=request.pk).state == RequestState.EXECUTING

    later = claimed + dt.timedelta(minutes=16)
    assert subject_requests_recover_stalled(now=later) == 1
    assert subject_requests_recover_stalled(now=later) == 0  # once
    request.refresh_from_db()
    assert request.state == RequestState.NEEDS_ATTENTION
    assert "preview and approve again" in request.error
    done.refresh_from_db()
    pending.refresh_from_db()
    assert (done.outcome, done.rows_affected, pending.outcome) == (DatasetOutcome.DONE, 1, DatasetOutcome.PENDING)
    event = AuditEvent.objects.get(action="subject_request.execution_stalled", target_id=str(request.pk))
    assert (event.outcome, event.metadata["done"], event.metadata["pending"]) == ("failed", 1, 1)

    # The worker was only slow: its end is recorded, the state it found stands.
    finish(request, creator, RequestState.DONE)
    assert SubjectRequest.objects.get(pk=request.pk).state == RequestState.NEEDS_ATTENTION
    assert AuditEvent.objects.filter(action="subject_request.executed_late", target_id=str(request.pk)).exists()

    # Previewed and approved again, it can run again.
    request = subject_request_preview(actor=creator, request=request)
    assert request.state == RequestState.PREVIEWED
    assert subject_request_approve(actor=approver, request=request).state == RequestState.APPROVED


def test_a_recent_execution_is_not_moved(privacy: tuple[Any, Any]) -> None:
    creator, approver = privacy
    request = subject_request_create(actor=creator, kind="erasure", identifiers={"email": SUBJECT})
    request = subject_request_approve(actor=approver, request=subject_request_preview(actor=creator, request=request))
    _claim(creator, request)
    assert subject_requests_recover_stalled(now=timezone.now()) == 0
    assert SubjectRequest.objects.get(pk=request.pk).state == RequestState.EXECUTING
