"""The self-service form (SUBJECTS_SELF_SERVICE): off, every page of it is a 404; on, a signed-in
user files a request about themselves, identified by their account's e-mail whatever the post says,
audited with them as the actor, listed for them with state and deadline only; the officers preview
and approve it as any other, two of them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from audit.models import AuditEvent
from subjects.models import RequestState, SubjectRequest
from subjects.services.requests import identifiers_of

from .conftest import run_execution

pytestmark = pytest.mark.django_db

VICTIM = "victim@example.com"


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text(response: Any) -> str:
    return response.content.decode()


def messages_of(html: str) -> str:
    found = re.search(r'<ul class="messages"[^>]*>(.*?)</ul>', html, re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", found.group(1)).split()) if found else ""


@pytest.fixture
def enabled(settings: Any) -> None:
    settings.SUBJECTS_SELF_SERVICE = True


def test_the_self_service_pages_are_not_there_when_it_is_off(analyst: Any) -> None:
    client = signed_in(analyst)
    assert client.get("/portal/subjects/mine/").status_code == 404
    assert client.get("/portal/subjects/mine/new/").status_code == 404
    assert client.post("/portal/subjects/mine/new/", {"kind": "erasure"}).status_code == 404
    assert not SubjectRequest.objects.exists()
    assert "My data</a>" not in text(client.get("/portal/dashboard/"))


def test_a_user_files_a_request_about_themselves_only(enabled: None, analyst: Any, privacy: tuple[Any, Any]) -> None:
    client = signed_in(analyst)
    mine = text(client.get("/portal/subjects/mine/"))
    assert "My data</a>" in mine and "You have made no request about your data." in mine
    form = text(client.get("/portal/subjects/mine/new/"))
    assert "<strong>analyst@example.com</strong>" in form and "identifier" not in form.lower()

    bad = client.post("/portal/subjects/mine/new/", {"kind": "everything"})
    assert bad.status_code == 400
    assert "Select a valid choice. everything is not one of the available choices." in text(bad)
    assert not SubjectRequest.objects.exists()

    # A tampered post naming somebody else: only the kind and the message are read.
    filed = client.post(
        "/portal/subjects/mine/new/",
        {
            "kind": "access",
            "message": "Please include my orders.",
            "email": VICTIM,
            "identifiers": f'{{"email": "{VICTIM}"}}',
            "identifier_kind_0": "email",
            "identifier_value_0": VICTIM,
            "created_by": str(privacy[0].pk),
        },
        follow=True,
    )
    made = SubjectRequest.objects.get()
    assert (made.kind, made.state, made.self_service, made.created_by) == ("access", "draft", True, analyst)
    assert identifiers_of(made) == {"email": "analyst@example.com"}
    assert made.identifier_kinds == ["email"]
    assert f"Your request #{made.pk} is filed" in messages_of(text(filed))
    listed = text(filed)
    assert f"<td>#{made.pk}</td>" in listed and "Draft" in listed and f"{made.due_at:%Y-%m-%d}" in listed
    event = AuditEvent.objects.get(action="subject_request.created")
    assert event.actor == analyst and event.metadata["self_service"] is True
    trail = str(list(AuditEvent.objects.values_list("metadata", "changes", "reason", "target_repr")))
    assert "example.com" not in trail  # neither the account's address nor the tampered one

    # The user's list shows state and deadline, never the request's page (officers only).
    assert client.get(f"/portal/subjects/{made.pk}/").status_code == 404

    # The officers: the request is in their list, the subject's message on its page; whoever
    # previewed it does not approve it (two officers see every request), another one does.
    first, second = signed_in(privacy[0]), signed_in(privacy[1])
    assert "self-service" in text(first.get("/portal/subjects/"))
    first.post(f"/portal/subjects/{made.pk}/preview/")
    page = text(first.get(f"/portal/subjects/{made.pk}/"))
    assert "Please include my orders." in page and "analyst@example.com" not in page
    assert "You previewed this self-service request: another privacy officer approves it" in page
    refused = first.post(f"/portal/subjects/{made.pk}/approve/", follow=True)
    assert "another privacy officer approves it" in messages_of(text(refused))
    assert "Approved" in messages_of(text(second.post(f"/portal/subjects/{made.pk}/approve/", follow=True)))
    assert SubjectRequest.objects.get().state == RequestState.APPROVED
    assert "Approved" in text(client.get("/portal/subjects/mine/"))


def test_an_account_without_an_email_cannot_file(enabled: None, make_user: Any) -> None:
    nobody = make_user("nomail", staff=False)
    nobody.email = ""
    nobody.save(update_fields=["email"])
    refused = signed_in(nobody).post("/portal/subjects/mine/new/", {"kind": "erasure", "email": VICTIM})
    assert refused.status_code == 400 and "Your account has no e-mail address" in text(refused)
    assert not SubjectRequest.objects.exists()
    denied = AuditEvent.objects.get(action="subject_request.file")
    assert (denied.actor, denied.outcome) == (nobody, "denied")


def test_users_see_only_their_own_requests_at_a_fixed_cost(
    enabled: None, analyst: Any, owner: Any, django_assert_max_num_queries: Any
) -> None:
    from subjects.services.self_service import subject_request_file

    theirs = subject_request_file(actor=owner, kind="erasure")
    mine = [subject_request_file(actor=analyst, kind=kind) for kind in ("access", "erasure", "restriction")]
    client = signed_in(analyst)
    with django_assert_max_num_queries(4):  # session, user, groups (the navigation), the requests
        page = text(client.get("/portal/subjects/mine/"))
    assert all(f"<td>#{m.pk}</td>" in page for m in mine) and f"<td>#{theirs.pk}</td>" not in page


def test_a_self_service_access_export_goes_to_the_officer_who_executed_it(
    enabled: None, analyst: Any, privacy: tuple[Any, Any]
) -> None:
    import io
    import zipfile

    signed_in(analyst).post("/portal/subjects/mine/new/", {"kind": "access"})
    pk = SubjectRequest.objects.get().pk
    first, second = signed_in(privacy[0]), signed_in(privacy[1])
    first.post(f"/portal/subjects/{pk}/preview/")
    second.post(f"/portal/subjects/{pk}/approve/")
    second.post(f"/portal/subjects/{pk}/execute/")
    assert run_execution(pk, privacy[1].pk) == RequestState.DONE  # what the worker runs

    assert "waits for its one download by the officer who executed the request" in text(
        first.get(f"/portal/subjects/{pk}/")
    )
    refused = first.post(f"/portal/subjects/{pk}/export/", follow=True)
    assert "Only the officer who executed this self-service request downloads its export." in messages_of(text(refused))
    assert signed_in(analyst).post(f"/portal/subjects/{pk}/export/").status_code == 404
    got = second.post(f"/portal/subjects/{pk}/export/")
    assert got.status_code == 200 and "manifest.json" in zipfile.ZipFile(io.BytesIO(got.content)).namelist()
