"""Erasure across two sources: previewed, approved by another officer, executed, verified on the real
targets; other customers untouched (counts and order-independent checksums); canaries never touched;
the audit trail holds counts only and still verifies."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from governance.errors import ConflictError, InvalidInput, NotPermitted
from subjects.models import DatasetOutcome, HandlingAction, RequestState, SubjectRequest
from subjects.services.identifiers import dataset_handling_set
from subjects.services.requests import (
    subject_request_approve,
    subject_request_create,
    subject_request_execute,
    subject_request_preview,
)
from tests.audit.trail import verify_cli

from .conftest import CRM_TABLES, HOSTILE, INJECTION, SHOP_TABLES, SUBJECT, checksum, dataset, dba, ids

pytestmark = pytest.mark.django_db(transaction=True)

# The rows that are NOT the subject's, per table (ids), and a SQL condition selecting them.
SHOP_OTHERS = {
    ("shop", "customers"): "id <> 1",
    ("shop", "orders"): "customer_id <> 1",
    ("shop", "events"): "order_id NOT IN (10, 11)",
}
CRM_OTHERS = {
    ("crm", "customers"): "id <> 1",
    ("crm", "orders"): "customer_id <> 1",
    ("crm", HOSTILE): "order_id <> 20",
    ("crm", "events"): "id NOT IN (300, 301)",
}


def counts(request: SubjectRequest) -> dict[tuple[str, str], int | None]:
    return {(r.dataset.schema, r.dataset.name): r.matched for r in request.datasets.select_related("dataset")}


def snapshot(shop: Any, crm: Any, where: dict[tuple[str, str], str] | None = None) -> dict[Any, tuple[int, str]]:
    out = {}
    for source, tables, others in ((shop, SHOP_TABLES, SHOP_OTHERS), (crm, CRM_TABLES, CRM_OTHERS)):
        for table in tables:
            condition = "true" if where is None else others[table]
            out[table] = checksum(source.database, table, condition)
    return out


def test_an_erasure_is_previewed_approved_executed_and_verified_on_two_sources(
    governed: tuple[Any, Any], privacy: tuple[Any, Any]
) -> None:
    shop, crm = governed
    creator, approver = privacy
    others_before = snapshot(shop, crm, where={})
    everything_before = snapshot(shop, crm)

    request = subject_request_create(actor=creator, kind="erasure", identifiers={"email": SUBJECT}, reference="CASE-1")
    request = subject_request_preview(actor=creator, request=request)
    assert request.state == RequestState.PREVIEWED
    assert counts(request) == {
        ("shop", "customers"): 1,
        ("shop", "orders"): 2,
        ("shop", "events"): 2,
        ("crm", "customers"): 1,
        ("crm", "orders"): 1,
        ("crm", HOSTILE): 2,
        ("crm", "events"): 2,
    }
    events = request.datasets.get(dataset=dataset(shop, "shop", "events"))
    assert events.paths == ["via events.order_id → orders.id, then orders.customer_id → customers.id"]
    assert request.datasets.get(dataset=dataset(crm, "crm", "events")).paths == ["direct: customer_email (email)"]
    assert snapshot(shop, crm) == everything_before, "a preview changed a source"

    with pytest.raises(NotPermitted, match="separation of duties"):
        subject_request_approve(actor=creator, request=request)
    request = subject_request_approve(actor=approver, request=request)
    request = subject_request_execute(actor=creator, request=request)

    assert request.state == RequestState.DONE, request.error
    rows = {(r.dataset.schema, r.dataset.name): r for r in request.datasets.select_related("dataset")}
    assert {t: (r.outcome, r.rows_affected, r.verified) for t, r in rows.items()} == {
        ("shop", "customers"): (DatasetOutcome.DONE, 1, True),
        ("shop", "orders"): (DatasetOutcome.DONE, 2, True),
        ("shop", "events"): (DatasetOutcome.DONE, 2, True),
        ("crm", "customers"): (DatasetOutcome.DONE, 1, True),
        ("crm", "orders"): (DatasetOutcome.DONE, 1, True),
        ("crm", HOSTILE): (DatasetOutcome.DONE, 2, True),
        ("crm", "events"): (DatasetOutcome.DONE, 2, True),
    }
    # No row of the subject remains; everyone else's rows are exactly as they were.
    assert ids(shop.database, ("shop", "customers")) == [2, 3, 4]
    assert ids(shop.database, ("shop", "orders")) == [12, 13]
    assert ids(shop.database, ("shop", "events")) == [102, 103]
    assert ids(crm.database, ("crm", "customers")) == [2, 3]
    assert ids(crm.database, ("crm", HOSTILE), "line_id") == [202]
    assert ids(crm.database, ("crm", "events")) == [302, 303]
    assert snapshot(shop, crm) == others_before

    # The audit trail says what was done with counts, never the subject's identifier, and verifies.
    trail = AuditEvent.objects.filter(target_type="subjects.subjectrequest", target_id=str(request.pk))
    actions = list(trail.order_by("pk").values_list("action", flat=True))
    assert actions[:4] == [
        "subject_request.created",
        "subject_request.previewed",
        "subject_request.approve",
        "subject_request.approved",
    ]
    assert actions.count("subject_request.dataset_done") == 7
    done = trail.get(action="subject_request.dataset_done", metadata__dataset=dataset(shop, "shop", "orders").pk)
    assert (done.actor, done.metadata["rows_affected"], done.metadata["verified"]) == (creator, 2, True)
    for event in AuditEvent.objects.all():
        text = f"{event.metadata} {event.reason} {event.target_repr} {event.changes}".lower()
        assert SUBJECT not in text and "lovelace" not in text
    code, out, err = verify_cli()
    assert code == 0, out + err


def test_a_dataset_on_legal_hold_is_skipped_with_its_reason(
    governed: tuple[Any, Any], privacy: tuple[Any, Any], owner: Any
) -> None:
    _shop, crm = governed
    creator, approver = privacy
    events = dataset(crm, "crm", "events")
    dataset_handling_set(
        actor=owner, dataset=events, action="retain", legal_basis="statutory_retention", reason="Tax law: keep 10 years"
    )
    request = subject_request_create(actor=creator, kind="erasure", identifiers={"email": SUBJECT})
    request = subject_request_preview(actor=creator, request=request)
    held = request.datasets.get(dataset=events)
    assert (held.action, held.legal_basis, held.reason, held.matched) == (
        HandlingAction.RETAIN,
        "statutory_retention",
        "Tax law: keep 10 years",
        2,
    )
    subject_request_approve(actor=approver, request=request)
    request = subject_request_execute(actor=creator, request=request)

    assert request.state == RequestState.DONE, request.error
    held.refresh_from_db()
    assert (held.outcome, held.rows_affected) == (DatasetOutcome.SKIPPED, None)
    assert ids(crm.database, ("crm", "events")) == [300, 301, 302, 303]
    assert ids(crm.database, ("crm", "customers")) == [2, 3]
    event = AuditEvent.objects.get(action="subject_request.dataset_skipped")
    assert event.reason == "Tax law: keep 10 years"
    assert (event.metadata["dataset"], event.metadata["legal_basis"]) == (events.pk, "statutory_retention")


def test_an_anonymised_dataset_keeps_its_rows_with_pii_nulled(
    governed: tuple[Any, Any], privacy: tuple[Any, Any], owner: Any
) -> None:
    shop, _crm = governed
    creator, approver = privacy
    dataset_handling_set(actor=owner, dataset=dataset(shop, "shop", "customers"), action="anonymise")
    request = subject_request_create(actor=creator, kind="erasure", identifiers={"email": SUBJECT})
    subject_request_preview(actor=creator, request=request)
    subject_request_approve(actor=approver, request=request)
    request = subject_request_execute(actor=creator, request=request)

    assert request.state == RequestState.DONE, request.error
    row = request.datasets.get(dataset=dataset(shop, "shop", "customers"))
    assert (row.outcome, row.rows_affected, row.verified) == (DatasetOutcome.DONE, 1, True)
    customers = ("shop", "customers")
    assert checksum(shop.database, customers, "id = 1 AND email IS NULL") == checksum(
        shop.database, customers, "id = 1"
    )
    assert checksum(shop.database, customers, "id = 1")[0] == 1
    assert ids(shop.database, ("shop", "orders")) == [12, 13]


def test_execution_refuses_when_counts_moved_since_the_preview(
    governed: tuple[Any, Any], privacy: tuple[Any, Any]
) -> None:
    shop, crm = governed
    creator, approver = privacy
    request = subject_request_create(actor=creator, kind="erasure", identifiers={"email": SUBJECT})
    subject_request_preview(actor=creator, request=request)
    subject_request_approve(actor=approver, request=request)
    dba(shop.database, "INSERT INTO shop.orders VALUES (14, 1, 1)")  # a new order since the preview
    before = snapshot(shop, crm)

    request = subject_request_execute(actor=creator, request=request)

    assert request.state == RequestState.NEEDS_ATTENTION
    moved = request.datasets.get(dataset=dataset(shop, "shop", "orders"))
    assert moved.outcome == DatasetOutcome.NEEDS_ATTENTION
    assert "3 matching rows now, 2 at the preview" in moved.error
    assert snapshot(shop, crm) == before, "nothing may change when a count moved"
    with pytest.raises(ConflictError, match="Only an approved request"):
        subject_request_execute(actor=creator, request=request)


def test_bad_input_is_refused_and_changes_nothing(
    governed: tuple[Any, Any], privacy: tuple[Any, Any], owner: Any
) -> None:
    creator, approver = privacy
    with pytest.raises(InvalidInput, match="Unknown identifier kind 'shoe_size'") as bad:
        subject_request_create(actor=creator, kind="erasure", identifiers={"shoe_size": "42"})
    assert bad.value.field == "identifiers"
    with pytest.raises(InvalidInput, match="The email identifier is empty"):
        subject_request_create(actor=creator, kind="erasure", identifiers={"email": "  "})
    with pytest.raises(InvalidInput, match="Give at least one identifier"):
        subject_request_create(actor=creator, kind="erasure", identifiers={})
    with pytest.raises(InvalidInput) as bad_kind:
        subject_request_create(actor=creator, kind="forget-me", identifiers={"email": SUBJECT})
    assert bad_kind.value.field == "kind"
    with pytest.raises(NotPermitted, match="Only privacy officers"):
        subject_request_create(actor=owner, kind="erasure", identifiers={"email": SUBJECT})
    assert not SubjectRequest.objects.exists()
    assert AuditEvent.objects.filter(action="subject_request.create", outcome="denied").count() == 5

    request = subject_request_create(actor=creator, kind="erasure", identifiers={"email": SUBJECT})
    with pytest.raises(ConflictError, match="Only a previewed request can be approved"):
        subject_request_approve(actor=approver, request=request)
    with pytest.raises(ConflictError, match="Only an approved request can be executed; this one is draft"):
        subject_request_execute(actor=creator, request=request)
    subject_request_preview(actor=creator, request=request)
    with pytest.raises(NotPermitted, match="separation of duties"):
        subject_request_approve(actor=creator, request=request)
    with pytest.raises(ConflictError, match="this one is previewed"):
        subject_request_execute(actor=creator, request=request)
    request.refresh_from_db()
    assert (request.state, request.approved_by) == (RequestState.PREVIEWED, None)
    assert not request.datasets.exclude(outcome=DatasetOutcome.PENDING).exists()


def test_an_injection_in_the_identifier_is_a_value(governed: tuple[Any, Any], privacy: tuple[Any, Any]) -> None:
    """The canary whose e-mail is SQL text is found as itself, and only it."""
    _, crm = governed
    creator, _ = privacy
    request = subject_request_create(actor=creator, kind="erasure", identifiers={"email": INJECTION})
    request = subject_request_preview(actor=creator, request=request)
    assert counts(request)[("crm", "customers")] == 1
    assert counts(request)[("crm", "events")] == 1
    assert counts(request)[("shop", "customers")] == 0
    assert checksum(crm.database, ("crm", "customers"))[0] == 3
