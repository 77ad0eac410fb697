"""Attacks through the portal's own inputs: stored XSS in descriptions, justifications, comments and
names shown by the portal and the admin; escalation by approving one's own request or another
owner's dataset; an auditor writing. Each must be refused or rendered inert."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.test import Client

from accounts.models import User
from governance.models import AccessRequest, Dataset, Role
from governance.services.requests import access_request_deny, access_request_submit

pytestmark = pytest.mark.django_db

PAYLOAD = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_stored_xss_is_inert_in_every_page_that_shows_it(
    analyst: User, owner: User, officer: User, make_dataset: Callable[..., Dataset]
) -> None:
    dataset = make_dataset("ledger", schema="finance", owner=owner, classification="confidential")
    Dataset.objects.filter(pk=dataset.pk).update(description=PAYLOAD)
    Role.objects.create(name=PAYLOAD[:90], slug="hostile", owner=analyst)
    req = access_request_submit(
        requester=analyst, dataset=dataset, justification=PAYLOAD, duration=dt.timedelta(days=1)
    )
    other = access_request_submit(
        requester=analyst,
        dataset=make_dataset("budget", schema="finance", owner=owner, classification="confidential"),
        justification="x",
        duration=dt.timedelta(days=1),
    )
    access_request_deny(access_request=other, approver=owner, comment=PAYLOAD)
    pages = {
        analyst: ["/portal/", f"/portal/datasets/{dataset.pk}/", "/portal/requests/", f"/portal/requests/{req.pk}/",
                  f"/portal/requests/{other.pk}/"],
        owner: ["/portal/inbox/", "/portal/matrix/", "/admin/governance/grant/matrix/",
                f"/admin/governance/accessrequest/{req.pk}/change/", f"/admin/governance/dataset/{dataset.pk}/change/"],
        officer: ["/portal/dashboard/", "/admin/audit/auditevent/"],
    }  # fmt: skip
    for user, urls in pages.items():
        client = signed_in(user)
        for url in urls:
            response = client.get(url)
            assert response.status_code == 200, url
            body = response.content.decode()
            assert "<script>alert" not in body and "<img src=x" not in body, url
    escaped = signed_in(analyst).get(f"/portal/requests/{req.pk}/").content.decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in escaped  # shown, as text


def test_approving_ones_own_request_or_another_owners_dataset_is_refused(
    owner: User, other_owner: User, analyst: User, make_dataset: Callable[..., Dataset]
) -> None:
    mine = make_dataset("mine", owner=owner, classification="confidential")
    own_request = access_request_submit(
        requester=owner, dataset=mine, justification="me", duration=dt.timedelta(days=1)
    )
    theirs = make_dataset("theirs", owner=other_owner, classification="confidential")
    foreign = access_request_submit(requester=analyst, dataset=theirs, justification="x", duration=dt.timedelta(days=1))
    client = signed_in(owner)
    for req in (own_request, foreign):
        client.post("/portal/inbox/decide/", {"ids": req.pk, f"stage_{req.pk}": "owner", "decision": "approve"})
        client.post(
            "/admin/governance/grant/matrix/act/", {"action": "approve", "id": req.pk, "stage": "owner", "next": "/"}
        )
        client.post(f"/admin/governance/accessrequest/{req.pk}/decide/", {"decision": "approve", "stage": "owner"})
        assert AccessRequest.objects.get(pk=req.pk).state == "pending", req


def test_an_auditor_reads_but_cannot_decide_or_revoke(
    auditor: User, analyst: User, owner: User, restricted_dataset: Dataset
) -> None:
    req = access_request_submit(
        requester=analyst, dataset=restricted_dataset, justification="x", duration=dt.timedelta(days=1)
    )
    client = signed_in(auditor)
    assert client.get("/portal/matrix/").status_code == 200
    assert client.get(f"/portal/requests/{req.pk}/").status_code == 200
    client.post(
        "/portal/inbox/decide/", {"ids": req.pk, f"stage_{req.pk}": "owner", "decision": "deny", "comment": "no"}
    )
    client.post("/admin/governance/grant/matrix/act/", {"action": "deny", "id": req.pk, "comment": "no", "next": "/"})
    assert AccessRequest.objects.get(pk=req.pk).state == "pending"
