"""The API end to end on the real targets: create, preview, approve (another officer), execute (202:
the task, run here in-process), the export once; bad input is a 400 naming the field; the list's
queries are pinned; the identifiers' values appear nowhere in what the API answers."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import AuditEvent
from subjects.models import RequestState, SubjectRequest

from .conftest import SUBJECT, ids, run_execution

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def api() -> Callable[[Any], Any]:
    from rest_framework.test import APIClient

    from accounts.tokens import api_token_create

    def make(user: Any) -> APIClient:
        client = APIClient()
        secret = api_token_create(user=user, scopes="read,approve", name="test").secret
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return client

    return make


def test_an_erasure_through_the_api(
    governed: tuple[Any, Any],
    privacy: tuple[Any, Any],
    api: Callable[[Any], Any],
) -> None:
    shop, crm = governed
    creator, approver = api(privacy[0]), api(privacy[1])

    bad = creator.post("/api/v1/subject-requests/", {"kind": "erasure", "identifiers": {"shoe": "9"}}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "identifiers"
    assert "Unknown identifier kind 'shoe'" in bad.json()["error"]["message"]
    empty = creator.post("/api/v1/subject-requests/", {"kind": "erasure", "identifiers": {"email": ""}}, format="json")
    assert (empty.status_code, empty.json()["error"]["field"]) == (400, "identifiers")
    assert not SubjectRequest.objects.exists()

    made = creator.post(
        "/api/v1/subject-requests/", {"kind": "erasure", "identifiers": {"email": SUBJECT}}, format="json"
    )
    assert made.status_code == 201, made.content
    pk = made.json()["id"]
    assert made.json()["identifier_kinds"] == ["email"] and SUBJECT not in made.content.decode()

    early = creator.post(f"/api/v1/subject-requests/{pk}/execute/", {}, format="json")
    assert early.status_code == 409 and "Only an approved request" in early.json()["error"]["message"]
    preview = creator.post(f"/api/v1/subject-requests/{pk}/preview/", {}, format="json")
    assert preview.status_code == 200
    assert sum(d["matched"] for d in preview.json()["datasets"]) == 11
    own = creator.post(f"/api/v1/subject-requests/{pk}/approve/", {}, format="json")
    assert own.status_code == 403 and "separation of duties" in own.json()["error"]["message"]
    assert approver.post(f"/api/v1/subject-requests/{pk}/approve/", {}, format="json").status_code == 200

    accepted = creator.post(f"/api/v1/subject-requests/{pk}/execute/", {}, format="json")
    assert accepted.status_code == 202
    assert AuditEvent.objects.get(action="subject_request.execute_requested").actor == privacy[0]
    # What the worker runs (the message went to the broker; no worker here): the task itself.
    assert run_execution(pk, privacy[0].pk) == RequestState.DONE

    detail = creator.get(f"/api/v1/subject-requests/{pk}/").json()
    assert detail["state"] == "done"
    assert all(d["verified"] for d in detail["datasets"])
    assert ids(shop.database, ("shop", "customers")) == [2, 3, 4]
    assert ids(crm.database, ("crm", "customers")) == [2, 3]
    assert SUBJECT not in str(detail)


def test_the_access_export_downloads_once(
    governed: tuple[Any, Any], privacy: tuple[Any, Any], api: Callable[[Any], Any]
) -> None:
    creator, approver = api(privacy[0]), api(privacy[1])
    pk = creator.post(
        "/api/v1/subject-requests/", {"kind": "access", "identifiers": {"email": SUBJECT}}, format="json"
    ).json()["id"]
    creator.post(f"/api/v1/subject-requests/{pk}/preview/", {}, format="json")
    approver.post(f"/api/v1/subject-requests/{pk}/approve/", {}, format="json")
    assert run_execution(pk, privacy[0].pk) == RequestState.DONE

    assert approver.get(f"/api/v1/subject-requests/{pk}/export/").status_code == 403
    got = creator.get(f"/api/v1/subject-requests/{pk}/export/")
    assert got.status_code == 200 and got["Content-Type"] == "application/zip"
    assert "manifest.json" in zipfile.ZipFile(io.BytesIO(got.content)).namelist()
    again = creator.get(f"/api/v1/subject-requests/{pk}/export/")
    assert again.status_code == 409 and "downloaded already" in again.json()["error"]["message"]


def test_the_list_costs_the_same_for_one_request_or_many(
    db: Any, privacy: tuple[Any, Any], api: Callable[[Any], Any], django_assert_num_queries: Any
) -> None:
    from subjects.services.requests import subject_request_create

    client = api(privacy[1])
    subject_request_create(actor=privacy[0], kind="access", identifiers={"email": "one@example.com"})
    client.get("/api/v1/subject-requests/")  # the token's first use is recorded once
    with CaptureQueriesContext(connection) as one:
        assert client.get("/api/v1/subject-requests/").status_code == 200
    for i in range(5):
        subject_request_create(actor=privacy[0], kind="erasure", identifiers={"customer_id": str(i)})
    with django_assert_num_queries(len(one.captured_queries)):
        listed = client.get("/api/v1/subject-requests/")
    assert len(listed.json()["results"]) == 6
    assert "one@example.com" not in listed.content.decode()


def test_the_owners_side_through_the_api(
    crm: Any, owner: Any, gov_admin: Any, analyst: Any, api: Callable[[Any], Any]
) -> None:
    from .conftest import dataset

    admin, steward, other = api(gov_admin), api(owner), api(analyst)
    assert steward.post("/api/v1/subject-identifiers/suggest/", {"source": crm.name}, format="json").status_code == 403
    suggested = admin.post("/api/v1/subject-identifiers/suggest/", {"source": crm.name}, format="json")
    assert (suggested.status_code, suggested.json()) == (200, {"new": 3})
    events = dataset(crm, "crm", "events")
    listed = other.get(f"/api/v1/subject-identifiers/?dataset={events.pk}").json()["results"]
    assert [(i["column"], i["kind"], i["status"]) for i in listed] == [("customer_email", "email", "suggested")]
    assert other.post(f"/api/v1/subject-identifiers/{listed[0]['id']}/confirm/", {}, format="json").status_code == 403
    confirmed = steward.post(f"/api/v1/subject-identifiers/{listed[0]['id']}/confirm/", {}, format="json")
    assert (confirmed.json()["status"], confirmed.json()["decided_by"]) == ("confirmed", "owner")

    default = other.get(f"/api/v1/subject-handling/{events.pk}/").json()
    assert (default["action"], default["set_at"]) == ("erase", None)
    no_reason = steward.put(
        f"/api/v1/subject-handling/{events.pk}/", {"action": "retain", "legal_basis": "legal_hold"}, format="json"
    )
    assert (no_reason.status_code, no_reason.json()["error"]["field"]) == (400, "reason")
    held = steward.put(
        f"/api/v1/subject-handling/{events.pk}/",
        {"action": "retain", "legal_basis": "legal_hold", "reason": "litigation 2026-17"},
        format="json",
    )
    assert (held.status_code, held.json()["set_by"], held.json()["reason"]) == (200, "owner", "litigation 2026-17")

    fks = other.get("/api/v1/subject-relationships/").json()["results"]
    assert {r["origin"] for r in fks} == {"foreign_key"} and len(fks) == 2
    body = {"dataset": events.pk, "columns": ["customer_email"], "referenced": dataset(crm, "crm", "customers").pk}
    bad = steward.post("/api/v1/subject-relationships/", {**body, "referenced_columns": ["nope"]}, format="json")
    assert (bad.status_code, bad.json()["error"]["field"]) == (400, "referenced_columns")
    made = steward.post("/api/v1/subject-relationships/", {**body, "referenced_columns": ["email"]}, format="json")
    assert (made.status_code, made.json()["origin"], made.json()["declared_by"]) == (201, "declared", "owner")
