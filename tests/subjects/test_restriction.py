"""Restriction (Art. 18) as the portal does it today: a recorded marker per dataset, acknowledged by
the dataset's owner — never an enforcement. Executing one changes nothing on any source (every
table's checksum before and after); the owner sees where the subject's rows are, never who the
subject is; the request is done once every dataset is acknowledged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from audit.models import AuditEvent
from governance.errors import ConflictError, NotPermitted
from subjects.models import DatasetOutcome, RequestAction, RequestDataset, RequestState
from subjects.services.requests import (
    subject_request_approve,
    subject_request_create,
    subject_request_execute,
    subject_request_preview,
)
from subjects.services.restriction import subject_restriction_acknowledge

from .conftest import SUBJECT, dataset
from .test_api import api  # noqa: F401  (the fixture)
from .test_erasure import snapshot

pytestmark = pytest.mark.django_db(transaction=True)


def executed_restriction(privacy: tuple[Any, Any], identifiers: dict[str, str]) -> Any:
    creator, approver = privacy
    request = subject_request_create(actor=creator, kind="restriction", identifiers=identifiers)
    request = subject_request_preview(actor=creator, request=request)
    assert {r.action for r in request.datasets.all()} == {RequestAction.RESTRICT}
    subject_request_approve(actor=approver, request=request)
    return subject_request_execute(actor=creator, request=request)


def test_a_restriction_is_recorded_per_dataset_and_changes_no_source(
    governed: tuple[Any, Any], privacy: tuple[Any, Any], owner: Any, make_user: Callable[..., Any]
) -> None:
    shop, crm = governed
    before = snapshot(shop, crm)

    request = executed_restriction(privacy, {"email": SUBJECT})

    assert request.state == RequestState.NEEDS_ATTENTION
    assert request.error == "Waiting for the owners of 7 dataset(s) to acknowledge the restriction."
    assert set(request.datasets.values_list("outcome", flat=True)) == {DatasetOutcome.NOTIFIED}
    assert snapshot(shop, crm) == before, "a restriction changed a source"
    notified = AuditEvent.objects.filter(action="subject_request.dataset_notified")
    assert notified.count() == 7
    assert {(e.metadata["action"], e.outcome) for e in notified} == {("restrict", "success")}

    # Only the dataset's owners and stewards (and governance admins) acknowledge.
    orders = request.datasets.get(dataset=dataset(shop, "shop", "orders"))
    stranger = make_user("stranger")
    with pytest.raises(NotPermitted, match="Only an owner or steward"):
        subject_restriction_acknowledge(actor=stranger, row=orders)
    with pytest.raises(NotPermitted):
        subject_restriction_acknowledge(actor=privacy[0], row=orders)

    rows = list(request.datasets.select_related("dataset"))
    for row in rows[:-1]:
        subject_restriction_acknowledge(actor=owner, row=row)
    request.refresh_from_db()
    assert request.state == RequestState.NEEDS_ATTENTION
    with pytest.raises(ConflictError, match="no restriction waiting"):
        subject_restriction_acknowledge(actor=owner, row=rows[0])
    subject_restriction_acknowledge(actor=owner, row=rows[-1])

    request.refresh_from_db()
    assert request.state == RequestState.DONE
    done = RequestDataset.objects.filter(request=request)
    assert set(done.values_list("outcome", "acknowledged_by")) == {(DatasetOutcome.DONE, owner.pk)}
    assert AuditEvent.objects.filter(action="subject_request.dataset_acknowledged", actor=owner).count() == 7
    assert snapshot(shop, crm) == before
    for event in AuditEvent.objects.all():
        assert SUBJECT not in f"{event.metadata} {event.reason} {event.target_repr} {event.changes}".lower()


def test_owners_see_and_acknowledge_restrictions_through_the_api(
    governed: tuple[Any, Any],
    privacy: tuple[Any, Any],
    owner: Any,
    make_user: Callable[..., Any],
    api: Callable[[Any], Any],  # noqa: F811
) -> None:
    shop, _crm = governed
    request = executed_restriction(privacy, {"email": SUBJECT})
    mine, theirs = api(owner), api(make_user("stranger"))

    listed = mine.get("/api/v1/subject-restrictions/")
    assert listed.status_code == 200
    results = listed.json()["results"]
    assert len(results) == 7 and SUBJECT not in listed.content.decode().lower()
    events = next(r for r in results if r["dataset"] == dataset(shop, "shop", "events").pk)
    assert (events["matched"], events["outcome"], events["request"]) == (2, "notified", request.pk)
    assert events["paths"] == ["via events.order_id → orders.id, then orders.customer_id → customers.id"]
    assert theirs.get("/api/v1/subject-restrictions/").json()["results"] == []

    url = f"/api/v1/subject-restrictions/{events['id']}/acknowledge/"
    assert theirs.post(url, {}, format="json").status_code == 404
    acked = mine.post(url, {}, format="json")
    assert acked.status_code == 200, acked.content
    assert (acked.json()["outcome"], acked.json()["acknowledged_by"]) == ("done", owner.username)
    again = mine.post(url, {}, format="json")
    assert again.status_code == 409
    detail = api(privacy[0]).get(f"/api/v1/subject-requests/{request.pk}/").json()
    row = next(d for d in detail["datasets"] if d["dataset"] == events["dataset"])
    assert (row["outcome"], row["acknowledged_by"]) == ("done", owner.username)


def test_a_restriction_matching_nothing_is_done_at_once(governed: tuple[Any, Any], privacy: tuple[Any, Any]) -> None:
    request = executed_restriction(privacy, {"email": "nobody@example.com"})
    assert request.state == RequestState.DONE, request.error
    assert set(request.datasets.values_list("outcome", flat=True)) == {DatasetOutcome.SKIPPED}
