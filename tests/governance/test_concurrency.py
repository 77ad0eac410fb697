"""Two approvers at once: the row lock lets exactly one transition through; the other gets a conflict."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from django.db import connection
from guardian.shortcuts import assign_perm

from audit.models import AuditEvent
from governance.errors import ConflictError
from governance.models import Approval, Grant, RequestState
from governance.services.requests import access_request_approve, access_request_deny, access_request_submit


def race(actions: list[Any]) -> list[Any]:
    """Run callables in threads released together; return each one's result or exception."""
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)

    def run(i: int, action: Any) -> None:
        try:
            barrier.wait()
            results[i] = action()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(actions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("rounds", range(5))
def test_two_owners_approving_at_once_make_one_grant(rounds, analyst, owner, other_owner, make_dataset):
    dataset = make_dataset("ledger", classification="confidential", owner=owner)
    assign_perm("approve_access", other_owner, dataset)
    req = access_request_submit(
        requester=analyst, dataset=dataset, justification="audit prep", duration=dt.timedelta(days=7)
    )

    results = race(
        [
            lambda: access_request_approve(access_request=req.pk, approver=owner, stage="owner"),
            lambda: access_request_approve(access_request=req.pk, approver=other_owner, stage="owner"),
        ]
    )
    conflicts = [r for r in results if isinstance(r, ConflictError)]
    successes = [r for r in results if not isinstance(r, Exception)]
    assert len(successes) == 1 and len(conflicts) == 1, results
    req.refresh_from_db()
    assert req.state == RequestState.APPROVED
    assert Approval.objects.filter(request=req).count() == 1
    assert Grant.objects.filter(source_request=req).count() == 1
    assert AuditEvent.objects.filter(action="access_request.approved").count() == 1
    assert AuditEvent.objects.filter(action="access_request.approve", outcome="denied").count() == 1


@pytest.mark.django_db(transaction=True)
def test_approve_and_deny_race_one_wins(analyst, owner, other_owner, restricted_dataset):
    assign_perm("approve_access", other_owner, restricted_dataset)
    req = access_request_submit(
        requester=analyst, dataset=restricted_dataset, justification="x", duration=dt.timedelta(days=3)
    )
    results = race(
        [
            lambda: access_request_approve(access_request=req.pk, approver=owner, stage="owner"),
            lambda: access_request_deny(access_request=req.pk, approver=other_owner, stage="owner", comment="no"),
        ]
    )
    assert sum(isinstance(r, ConflictError) for r in results) == 1, results
    req.refresh_from_db()
    assert Approval.objects.filter(request=req).count() == 1
    decided = Approval.objects.get(request=req).decision
    assert (req.state, req.current_stage) in {
        (RequestState.DENIED, ""),
        (RequestState.PENDING, "security_officer"),
    }
    assert (decided == "denied") == (req.state == RequestState.DENIED)


@pytest.mark.django_db(transaction=True)
def test_two_identical_submits_at_once_make_one_request(analyst, owner, make_dataset):
    from governance.models import AccessRequest

    dataset = make_dataset("ledger", classification="internal", owner=owner)
    results = race(
        [
            lambda: access_request_submit(requester=analyst, dataset=dataset, duration=dt.timedelta(days=2)),
            lambda: access_request_submit(requester=analyst, dataset=dataset, duration=dt.timedelta(days=2)),
        ]
    )
    assert sum(isinstance(r, ConflictError) for r in results) == 1, results
    assert AccessRequest.objects.count() == 1
