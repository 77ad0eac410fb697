"""The privacy officers' pages on the real targets: record a request through the form, preview it
(counts and how rows match per dataset on the page), another officer approves (the creator is told
why not), execute, the outcome per dataset; the access export once. Non-officers get 404; the
subject's identifier never appears in an officer's page after the form; bad input is a field error
that creates nothing; the list's queries are pinned."""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from audit.models import AuditEvent
from subjects.models import RequestState, SubjectRequest
from subjects.services.requests import subject_request_create

from .conftest import SUBJECT, dataset, ids, run_execution


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text(response: Any) -> str:
    return response.content.decode()


def row(html: str, element_id: str) -> str:
    """The text of one table row of a page (by its id), tags removed."""
    found = re.search(rf'<tr id="{re.escape(element_id)}"[^>]*>(.*?)</tr>', html, re.S)
    assert found, element_id
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split())


def messages_of(html: str) -> str:
    found = re.search(r'<ul class="messages"[^>]*>(.*?)</ul>', html, re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split()) if found else ""


FORM = {"kind": "erasure", "identifier_kind_0": "email", "identifier_value_0": SUBJECT, "reference": "CASE-17"}


@pytest.mark.django_db(transaction=True)
def test_an_erasure_from_the_form_to_its_outcome_per_dataset(
    governed: tuple[Any, Any], privacy: tuple[Any, Any]
) -> None:
    shop, _ = governed
    creator, approver = signed_in(privacy[0]), signed_in(privacy[1])
    seen: list[str] = []  # every officer page after the form: the subject's e-mail must be in none

    form_page = creator.get("/portal/subjects/new/")
    assert form_page.status_code == 200 and 'name="identifier_value_0"' in text(form_page)
    missing = creator.post("/portal/subjects/new/", {"kind": "erasure", "reference": "x"})
    assert missing.status_code == 400 and "Give at least one identifier of the subject." in text(missing)
    shoe = creator.post("/portal/subjects/new/", {**FORM, "identifier_kind_0": "shoe"})
    assert shoe.status_code == 400 and "Select a valid choice. shoe is not one of the available choices." in text(shoe)
    no_kind = creator.post("/portal/subjects/new/", {**FORM, "kind": ""})
    assert no_kind.status_code == 400 and "This field is required." in text(no_kind)
    twice = creator.post(
        "/portal/subjects/new/", {**FORM, "identifier_kind_1": "email", "identifier_value_1": "b@x.io"}
    )
    assert twice.status_code == 400 and "This kind is given twice" in text(twice)
    assert not SubjectRequest.objects.exists()

    made = creator.post("/portal/subjects/new/", FORM)
    assert made.status_code == 302
    pk = SubjectRequest.objects.get().pk
    assert made["Location"] == f"/portal/subjects/{pk}/"
    created = creator.get(made["Location"])
    seen.append(text(created))
    assert f"Request #{pk} is recorded" in messages_of(text(created))
    assert "Not previewed yet" in text(created)
    assert AuditEvent.objects.get(action="subject_request.created").actor == privacy[0]

    creator.post(f"/portal/subjects/{pk}/preview/")
    previewed = creator.get(f"/portal/subjects/{pk}/")
    html = text(previewed)
    seen.append(html)
    customers, orders = dataset(shop, "shop", "customers"), dataset(shop, "shop", "orders")
    assert row(html, f"dataset-{customers.pk}").startswith("shop.customers")
    assert "1 direct: email (email) Erase" in row(html, f"dataset-{customers.pk}")
    assert "2 via orders.customer_id → customers.id Erase" in row(html, f"dataset-{orders.pk}")
    counts = [int(n) for n in re.findall(r'<td class="matched">(\d+)</td>', html)]
    assert sum(counts) == 11 and len(counts) == 7
    # The creator is told why they cannot approve; posting anyway is refused with the same words.
    assert "You cannot approve a request you created (separation of duties)." in html
    assert f'action="/portal/subjects/{pk}/approve/"' not in html
    own = creator.post(f"/portal/subjects/{pk}/approve/", follow=True)
    assert "You cannot approve a request you created" in messages_of(text(own))
    assert SubjectRequest.objects.get().state == RequestState.PREVIEWED

    page = text(approver.get(f"/portal/subjects/{pk}/"))
    seen.append(page)
    assert f'action="/portal/subjects/{pk}/approve/"' in page
    approved = approver.post(f"/portal/subjects/{pk}/approve/", follow=True)
    seen.append(text(approved))
    assert "Approved: it can be executed now." in messages_of(text(approved))
    assert f"by {privacy[1].username}" in text(approved)

    blank = creator.post(f"/portal/subjects/{pk}/extend/", {"reason": "  "})
    assert blank.status_code == 400 and "This field is required." in text(blank)
    extended = creator.post(f"/portal/subjects/{pk}/extend/", {"reason": "Two sources to search"}, follow=True)
    due = SubjectRequest.objects.get().due_at
    assert f"The deadline is now {due:%Y-%m-%d}." in messages_of(text(extended))
    assert "Two sources to search" in text(extended) and "Extend the deadline (once)" not in text(extended)

    executed = creator.post(f"/portal/subjects/{pk}/execute/", follow=True)
    assert "Execution requested" in messages_of(text(executed))
    assert AuditEvent.objects.get(action="subject_request.execute_requested").actor == privacy[0]
    assert run_execution(pk, privacy[0].pk) == RequestState.DONE  # what the worker runs
    done = text(creator.get(f"/portal/subjects/{pk}/"))
    seen.append(done)
    assert '<span class="status ok">Done</span>' in done
    assert "Done 1 verified" in row(done, f"dataset-{customers.pk}")
    assert "Done 2 verified" in row(done, f"dataset-{orders.pk}")
    assert ids(shop.database, ("shop", "customers")) == [2, 3, 4]

    seen += [text(creator.get("/portal/subjects/")), text(approver.get("/portal/subjects/?state=done"))]
    seen.append(text(creator.get("/portal/subjects/new/")))  # the empty form again: no value kept
    for html in seen:
        assert SUBJECT.lower() not in html.lower()


@pytest.mark.django_db(transaction=True)
def test_the_access_export_downloads_once_from_the_page(governed: Any, privacy: tuple[Any, Any]) -> None:
    creator, approver = signed_in(privacy[0]), signed_in(privacy[1])
    creator.post("/portal/subjects/new/", {**FORM, "kind": "access"})
    pk = SubjectRequest.objects.get().pk
    creator.post(f"/portal/subjects/{pk}/preview/")
    approver.post(f"/portal/subjects/{pk}/approve/")
    creator.post(f"/portal/subjects/{pk}/execute/")
    assert run_execution(pk, privacy[0].pk) == RequestState.DONE

    assert "waits for its one download by the officer who created" in text(approver.get(f"/portal/subjects/{pk}/"))
    assert approver.get(f"/portal/subjects/{pk}/export/").status_code == 405  # a prefetched link spends nothing
    assert "Download the export (once)" in text(creator.get(f"/portal/subjects/{pk}/"))
    got = creator.post(f"/portal/subjects/{pk}/export/")
    assert got.status_code == 200 and got["Content-Type"] == "application/zip"
    assert "manifest.json" in zipfile.ZipFile(io.BytesIO(got.content)).namelist()
    again = creator.post(f"/portal/subjects/{pk}/export/", follow=True)
    assert "The export was downloaded already: it is deleted." in messages_of(text(again))
    assert "it is gone now (downloadable once, then deleted)" in text(again)


@pytest.mark.django_db
def test_nobody_but_officers_and_readers_sees_a_request(
    privacy: tuple[Any, Any], analyst: Any, owner: Any, auditor: Any
) -> None:
    made = subject_request_create(actor=privacy[0], kind="erasure", identifiers={"email": SUBJECT})
    for user in (analyst, owner):
        client = signed_in(user)
        for url in ("/portal/subjects/", f"/portal/subjects/{made.pk}/", "/portal/subjects/new/"):
            assert client.get(url).status_code == 404, url
        for action in ("preview", "approve", "execute", "export", "extend"):
            assert client.post(f"/portal/subjects/{made.pk}/{action}/", {"reason": "x"}).status_code == 404
        assert "Subject requests" not in text(client.get("/portal/dashboard/"))
    assert SubjectRequest.objects.get().state == RequestState.DRAFT
    assert Client().get("/portal/subjects/").status_code == 302  # to the sign-in page
    assert signed_in(privacy[0]).get("/portal/subjects/99999999999999999999/").status_code == 404

    reader = signed_in(auditor)
    listed = text(reader.get("/portal/subjects/"))
    assert f'href="/portal/subjects/{made.pk}/"' in listed and "Record a request" not in listed
    assert "Subject requests</a>" in listed  # the navigation link
    detail = text(reader.get(f"/portal/subjects/{made.pk}/"))
    assert 'id="actions"' not in detail and SUBJECT not in detail
    assert reader.get("/portal/subjects/new/").status_code == 403
    refused = reader.post(f"/portal/subjects/{made.pk}/preview/", follow=True)
    assert "Only privacy officers handle data-subject requests." in messages_of(text(refused))


@pytest.mark.django_db
def test_the_list_filters_by_state_marks_overdue_and_costs_the_same_for_many(
    privacy: tuple[Any, Any], django_assert_max_num_queries: Any
) -> None:
    import datetime as dt

    from django.utils import timezone

    client = signed_in(privacy[1])
    late = subject_request_create(actor=privacy[0], kind="erasure", identifiers={"email": SUBJECT}, reference="LATE")
    SubjectRequest.objects.filter(pk=late.pk).update(due_at=timezone.now() - dt.timedelta(days=1))
    # Session, user, groups, count, the page of requests (creators joined): nothing per row.
    with django_assert_max_num_queries(5):
        one = client.get("/portal/subjects/")
    assert "overdue" in row(text(one), f"request-{late.pk}")
    for i in range(30):
        subject_request_create(actor=privacy[0], kind="access", identifiers={"customer_id": str(i)})
    with django_assert_max_num_queries(5):
        many = client.get("/portal/subjects/")
    assert text(many).count('<tr id="request-') == 31
    overdue = text(client.get("/portal/subjects/?state=overdue"))
    assert overdue.count('<tr id="request-') == 1 and "LATE" in overdue
    assert text(client.get("/portal/subjects/?state=done")).count('<tr id="request-') == 0
    assert text(client.get("/portal/subjects/?state=drafty")).count('<tr id="request-') == 31  # unknown: all


@pytest.mark.django_db
def test_owners_set_a_datasets_handling_on_its_page(make_dataset: Callable[..., Any], owner: Any, analyst: Any) -> None:
    from subjects.models import DatasetHandling

    orders = make_dataset("orders", owner=owner, schema="shop")
    steward = signed_in(owner)
    assert f'href="/portal/subjects/datasets/{orders.pk}/handling/"' in text(
        steward.get(f"/portal/datasets/{orders.pk}/")
    )
    page = text(steward.get(f"/portal/subjects/datasets/{orders.pk}/handling/"))
    assert "Erase (delete the rows) (the default: nobody set it)" in " ".join(re.sub(r"<[^>]+>", " ", page).split())
    url = f"/portal/subjects/datasets/{orders.pk}/handling/"
    no_reason = steward.post(url, {"action": "retain", "legal_basis": "statutory_retention", "reason": ""})
    assert no_reason.status_code == 400 and "Say why the data is retained (the law or the hold)." in text(no_reason)
    assert not DatasetHandling.objects.exists()
    saved = steward.post(
        url, {"action": "retain", "legal_basis": "statutory_retention", "reason": "Invoices: 10 years"}, follow=True
    )
    assert "The handling is saved" in messages_of(text(saved))
    assert "Statutory retention: Invoices: 10 years" in text(saved)
    assert AuditEvent.objects.get(action="subject_handling.set", outcome="success").actor == owner

    other = signed_in(analyst)
    assert "Save the handling" not in text(other.get(url))
    refused = other.post(url, {"action": "erase"}, follow=True)
    assert "Only an owner or steward of shop.orders can set its handling." in messages_of(text(refused))
    assert DatasetHandling.objects.get().action == "retain"
    assert other.get("/portal/subjects/datasets/999999/handling/").status_code == 404
    assert other.get("/portal/subjects/datasets/99999999999999999999/handling/").status_code == 404
