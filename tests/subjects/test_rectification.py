"""Rectification (Art. 16) on the real targets: the officer's corrections, approved by another officer,
set on exactly the subject's rows (other customers' rows byte for byte as they were), each dataset
proven by the ctids its UPDATE returned; a value that does not cast fails its dataset and changes
nothing; corrections changed after approval need a new approval; no value reaches the audit trail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from audit.models import AuditEvent
from governance.errors import ConflictError, InvalidInput, NotPermitted
from subjects.models import DatasetOutcome, RequestAction, RequestState, SubjectRequest
from subjects.services.identifiers import dataset_handling_set
from subjects.services.rectification import subject_request_correct
from subjects.services.requests import (
    subject_request_approve,
    subject_request_create,
    subject_request_execute,
    subject_request_preview,
)

from .conftest import HOSTILE, INJECTION, SUBJECT, checksum, dataset, dba, query
from .test_api import api  # noqa: F401  (the fixture)
from .test_erasure import snapshot

pytestmark = pytest.mark.django_db(transaction=True)

NEW_EMAIL = "ada.king@example.org"
NEW_NAME = "Augusta Ada King"
NEW_CRM_EMAIL = "countess@lovelace.example"


def outcomes(request: SubjectRequest) -> dict[tuple[str, str], tuple[str, int | None, bool | None]]:
    return {
        (r.dataset.schema, r.dataset.name): (r.outcome, r.rows_affected, r.verified)
        for r in request.datasets.select_related("dataset")
    }


def approved_rectification(
    governed: tuple[Any, Any], privacy: tuple[Any, Any], corrections: list[dict[str, Any]]
) -> SubjectRequest:
    creator, approver = privacy
    request = subject_request_create(actor=creator, kind="rectification", identifiers={"email": SUBJECT})
    request = subject_request_preview(actor=creator, request=request)
    subject_request_correct(actor=creator, request=request, corrections=corrections)
    return subject_request_approve(actor=approver, request=request)


def assert_no_value_in_audit(*values: str) -> None:
    for event in AuditEvent.objects.all():
        text = f"{event.metadata} {event.reason} {event.target_repr} {event.changes}".lower()
        for value in values:
            assert value.lower() not in text, (event.action, value)


def test_a_rectification_sets_the_new_values_on_exactly_the_subjects_rows(
    governed: tuple[Any, Any], privacy: tuple[Any, Any]
) -> None:
    shop, crm = governed
    creator, _ = privacy
    others_before = snapshot(shop, crm, where={})
    customers, orders, events = (dataset(shop, "shop", t) for t in ("customers", "orders", "events"))
    crm_events = dataset(crm, "crm", "events")

    request = approved_rectification(
        governed,
        privacy,
        [
            # The identifier column itself: proven by the rows' ctids, not by matching again.
            {"dataset": customers.pk, "column": "email", "value": NEW_EMAIL},
            {"dataset": customers.pk, "column": "full_name", "value": NEW_NAME},
            # Matched through customers.email: runs before it (children first), numeric cast from text.
            {"dataset": orders.pk, "column": "amount", "value": "8.25"},
            {"dataset": crm_events.pk, "column": "customer_email", "value": NEW_CRM_EMAIL},
        ],
    )
    assert request.state == RequestState.APPROVED
    assert {r.action for r in request.datasets.all()} == {RequestAction.RECTIFY}
    request = subject_request_execute(actor=creator, request=request)

    assert request.state == RequestState.DONE, request.error
    got = outcomes(request)
    assert got[("shop", "customers")] == (DatasetOutcome.DONE, 1, True)
    assert got[("shop", "orders")] == (DatasetOutcome.DONE, 2, True)
    assert got[("crm", "events")] == (DatasetOutcome.DONE, 2, True)
    for table in (("shop", "events"), ("crm", "customers"), ("crm", "orders"), ("crm", HOSTILE)):
        assert got[table] == (DatasetOutcome.SKIPPED, None, None), table
    assert request.datasets.get(dataset=events).outcome == DatasetOutcome.SKIPPED

    # The subject's rows hold the new values...
    assert query(shop.database, "SELECT id, email, full_name, country FROM shop.customers WHERE id = 1") == [
        (1, NEW_EMAIL, NEW_NAME, "UK")
    ]
    assert query(shop.database, "SELECT id, amount::text FROM shop.orders WHERE customer_id = 1 ORDER BY id") == [
        (10, "8.25"),
        (11, "8.25"),
    ]
    assert query(crm.database, "SELECT id, customer_email FROM crm.events WHERE id IN (300, 301) ORDER BY id") == [
        (300, NEW_CRM_EMAIL),
        (301, NEW_CRM_EMAIL),
    ]
    # ...and everyone else's rows (the canaries that look like the subject included) are as they were.
    assert snapshot(shop, crm, where={}) == others_before
    assert query(crm.database, "SELECT count(*) FROM crm.events WHERE customer_email = %s", [INJECTION]) == [(1,)]

    # What is kept: which columns, counts and the verification; never a value.
    request.refresh_from_db()
    assert request.correction_columns == [
        {"dataset": customers.pk, "column": "email"},
        {"dataset": customers.pk, "column": "full_name"},
        {"dataset": orders.pk, "column": "amount"},
        {"dataset": crm_events.pk, "column": "customer_email"},
    ]
    assert NEW_NAME not in request.corrections_encrypted and NEW_EMAIL not in request.corrections_encrypted
    done = AuditEvent.objects.get(action="subject_request.dataset_done", metadata__dataset=orders.pk)
    assert done.metadata["action"] == "rectify"
    assert (done.metadata["rows_affected"], done.metadata["verified"]) == (2, True)
    assert done.metadata["columns"] == ["amount"]
    set_event = AuditEvent.objects.get(action="subject_request.corrections_set")
    assert set_event.metadata["corrections"] == 4
    assert_no_value_in_audit(SUBJECT, NEW_EMAIL, NEW_NAME, NEW_CRM_EMAIL, "lovelace", "8.25")


def test_a_value_that_does_not_cast_fails_its_dataset_and_changes_nothing(
    governed: tuple[Any, Any], privacy: tuple[Any, Any]
) -> None:
    shop, crm = governed
    creator, _ = privacy
    bad = "twelve pounds (secret note)"
    request = approved_rectification(
        governed,
        privacy,
        [
            {"dataset": dataset(shop, "shop", "orders").pk, "column": "amount", "value": bad},
            {"dataset": dataset(shop, "shop", "customers").pk, "column": "full_name", "value": NEW_NAME},
        ],
    )
    before = snapshot(shop, crm)

    request = subject_request_execute(actor=creator, request=request)

    assert request.state == RequestState.FAILED
    orders = request.datasets.get(dataset=dataset(shop, "shop", "orders"))
    assert (orders.outcome, orders.rows_affected, orders.verified) == (DatasetOutcome.FAILED, None, None)
    assert orders.error == ("A new value does not fit its column's type (invalid text representation) (rolled back)"), (
        orders.error
    )
    # Its parent is not changed after a child failed (the source stops).
    customers = request.datasets.get(dataset=dataset(shop, "shop", "customers"))
    assert customers.outcome == DatasetOutcome.PENDING and customers.error.startswith("Not run:")
    assert snapshot(shop, crm) == before, "a failed rectification changed a source"
    assert_no_value_in_audit(SUBJECT, bad, NEW_NAME)
    assert bad not in request.error


def test_a_change_the_verification_cannot_prove_is_rolled_back(
    governed: tuple[Any, Any], privacy: tuple[Any, Any]
) -> None:
    """A trigger rewrites the new value: the UPDATE succeeds, the proof by ctid does not, so nothing stays."""
    shop, crm = governed
    creator, _ = privacy
    dba(
        shop.database,
        "CREATE OR REPLACE FUNCTION shop.shout() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN NEW.full_name := upper(NEW.full_name); RETURN NEW; END $$",
        "CREATE TRIGGER shout BEFORE UPDATE ON shop.customers FOR EACH ROW EXECUTE FUNCTION shop.shout()",
    )
    try:
        request = approved_rectification(
            governed,
            privacy,
            [{"dataset": dataset(shop, "shop", "customers").pk, "column": "full_name", "value": NEW_NAME}],
        )
        before = snapshot(shop, crm)
        request = subject_request_execute(actor=creator, request=request)
    finally:
        dba(shop.database, "DROP TRIGGER IF EXISTS shout ON shop.customers", "DROP FUNCTION IF EXISTS shop.shout()")

    assert request.state == RequestState.FAILED
    row = request.datasets.get(dataset=dataset(shop, "shop", "customers"))
    assert row.outcome == DatasetOutcome.FAILED
    assert row.error == "Changed 1 rows of 1 counted, verified: False: rolled back."
    assert snapshot(shop, crm) == before


def test_corrections_changed_after_approval_need_a_new_approval(
    governed: tuple[Any, Any], privacy: tuple[Any, Any]
) -> None:
    shop, crm = governed
    creator, approver = privacy
    customers = dataset(shop, "shop", "customers")
    request = approved_rectification(
        governed, privacy, [{"dataset": customers.pk, "column": "full_name", "value": "Ada K."}]
    )
    assert request.state == RequestState.APPROVED

    # The approver changes them: back to previewed, and they cannot approve their own corrections.
    request = subject_request_correct(
        actor=approver,
        request=request,
        corrections=[{"dataset": customers.pk, "column": "full_name", "value": NEW_NAME}],
    )
    assert (request.state, request.approved_by, request.approved_digest) == (RequestState.PREVIEWED, None, "")
    assert AuditEvent.objects.get(action="subject_request.corrections_set", metadata__approval_withdrawn=True)
    with pytest.raises(ConflictError, match="Only an approved request can be executed; this one is previewed"):
        subject_request_execute(actor=creator, request=request)
    with pytest.raises(NotPermitted, match="corrections you set"):
        subject_request_approve(actor=approver, request=request)
    with pytest.raises(NotPermitted, match="a request you created"):
        subject_request_approve(actor=creator, request=request)

    # Changed behind the service's back after approval (the stored ciphertext swapped): the digest
    # no longer holds, so nothing runs.
    other = subject_request_create(actor=creator, kind="rectification", identifiers={"email": SUBJECT})
    subject_request_preview(actor=creator, request=other)
    subject_request_correct(
        actor=creator, request=other, corrections=[{"dataset": customers.pk, "column": "country", "value": "XX"}]
    )
    third = approved_rectification(
        governed, privacy, [{"dataset": customers.pk, "column": "full_name", "value": NEW_NAME}]
    )
    other.refresh_from_db()
    SubjectRequest.objects.filter(pk=third.pk).update(corrections_encrypted=other.corrections_encrypted)
    before = snapshot(shop, crm)
    third = subject_request_execute(actor=creator, request=third)
    assert third.state == RequestState.NEEDS_ATTENTION
    assert "changed since its approval" in third.error
    assert snapshot(shop, crm) == before


def test_bad_corrections_are_refused_naming_the_field(
    governed: tuple[Any, Any], privacy: tuple[Any, Any], owner: Any
) -> None:
    shop, crm = governed
    creator, approver = privacy
    customers, crm_customers = dataset(shop, "shop", "customers"), dataset(crm, "crm", "customers")

    draft = subject_request_create(actor=creator, kind="rectification", identifiers={"email": INJECTION})
    with pytest.raises(ConflictError, match="on a previewed request; this one is draft"):
        subject_request_correct(
            actor=creator, request=draft, corrections=[{"dataset": crm_customers.pk, "column": "phone", "value": "1"}]
        )
    request = subject_request_preview(actor=creator, request=draft)  # matches crm only: shop has 0 rows
    cases = [
        ([], "at least one correction"),
        ([{"dataset": crm_customers.pk, "column": "phone"}], "exactly dataset, column and value"),
        ([{"dataset": crm_customers.pk, "column": "shoe_size", "value": "42"}], "has no column 'shoe_size'"),
        ([{"dataset": customers.pk, "column": "email", "value": "x@y"}], "holds none of the subject's rows"),
        ([{"dataset": 10**9, "column": "email", "value": "x@y"}], "holds none of the subject's rows"),
        ([{"dataset": crm_customers.pk, "column": "phone", "value": 7}], "text of at most"),
        (
            [{"dataset": crm_customers.pk, "column": "phone", "value": "1"}] * 2,
            "'phone' of dataset",
        ),
    ]
    for corrections, message in cases:
        with pytest.raises(InvalidInput, match=message) as refused:
            subject_request_correct(actor=creator, request=request, corrections=corrections)
        assert refused.value.field == "corrections"

    dataset_handling_set(
        actor=owner, dataset=crm_customers, action="retain", legal_basis="legal_hold", reason="Litigation hold"
    )
    request = subject_request_preview(actor=creator, request=request)
    with pytest.raises(InvalidInput, match="is retained"):
        subject_request_correct(
            actor=creator, request=request, corrections=[{"dataset": crm_customers.pk, "column": "phone", "value": "1"}]
        )
    with pytest.raises(ConflictError, match="Set the corrections before approving"):
        subject_request_approve(actor=approver, request=request)
    erasure = subject_request_create(actor=creator, kind="erasure", identifiers={"email": SUBJECT})
    subject_request_preview(actor=creator, request=erasure)
    with pytest.raises(ConflictError, match="Only a rectification request has corrections"):
        subject_request_correct(
            actor=creator, request=erasure, corrections=[{"dataset": customers.pk, "column": "email", "value": "x"}]
        )
    request.refresh_from_db()
    assert (request.corrections_encrypted, request.correction_columns) == ("", [])
    assert AuditEvent.objects.filter(action="subject_request.correct", outcome="denied").count() == len(cases) + 3
    assert checksum(crm.database, ("crm", "customers"))[0] == 3


def test_corrections_through_the_api(
    governed: tuple[Any, Any],
    privacy: tuple[Any, Any],
    api: Callable[[Any], Any],  # noqa: F811
) -> None:
    shop, crm = governed
    creator, approver = api(privacy[0]), api(privacy[1])
    customers = dataset(shop, "shop", "customers")
    others_before = snapshot(shop, crm, where={})
    pk = creator.post(
        "/api/v1/subject-requests/", {"kind": "rectification", "identifiers": {"email": SUBJECT}}, format="json"
    ).json()["id"]
    assert creator.post(f"/api/v1/subject-requests/{pk}/preview/", {}, format="json").status_code == 200
    url = f"/api/v1/subject-requests/{pk}/corrections/"

    for body, message in (
        ({"corrections": []}, "at least one correction"),
        ({"corrections": [{"dataset": customers.pk, "column": "nope", "value": "x"}]}, "has no column 'nope'"),
    ):
        bad = creator.post(url, body, format="json")
        assert bad.status_code == 400, bad.content
        assert bad.json()["error"]["field"] == "corrections"
        assert message in bad.json()["error"]["message"]
    wrong_type = creator.post(url, {"corrections": [{"dataset": "x", "column": "c", "value": "v"}]}, format="json")
    assert wrong_type.status_code == 400 and "corrections" in wrong_type.content.decode()

    body = {"corrections": [{"dataset": customers.pk, "column": "full_name", "value": NEW_NAME}]}
    done = creator.post(url, body, format="json")
    assert done.status_code == 200, done.content
    assert done.json()["correction_columns"] == [{"dataset": customers.pk, "column": "full_name"}]
    assert NEW_NAME not in done.content.decode()
    assert approver.post(f"/api/v1/subject-requests/{pk}/approve/", {}, format="json").status_code == 200
    subject_request_execute(actor=privacy[0], request=SubjectRequest.objects.get(pk=pk))

    detail = creator.get(f"/api/v1/subject-requests/{pk}/")
    assert detail.json()["state"] == "done"
    assert NEW_NAME not in detail.content.decode() and SUBJECT not in detail.content.decode()
    assert query(shop.database, "SELECT full_name FROM shop.customers WHERE id = 1") == [(NEW_NAME,)]
    assert snapshot(shop, crm, where={}) == others_before
    assert_no_value_in_audit(SUBJECT, NEW_NAME)
