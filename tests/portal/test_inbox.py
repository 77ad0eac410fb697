"""The approver's inbox: what waits for me and why it is risky, single and bulk decisions through the
services, HTMX partial answers, refusals that change nothing, and a constant query count."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from audit.models import AuditEvent
from governance.models import AccessRequest, Dataset
from governance.services.requests import access_request_approve, access_request_submit

pytestmark = pytest.mark.django_db


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def submit(analyst: User, dataset: Dataset, days: int = 3, **kw: Any) -> AccessRequest:
    return access_request_submit(
        requester=analyst, dataset=dataset, justification="payroll audit", duration=dt.timedelta(days=days), **kw
    )


def test_inbox_shows_my_stage_only_with_the_risk(
    analyst: User, owner: User, officer: User, other_owner: User, restricted_dataset: Dataset
) -> None:
    ssn = restricted_dataset.columns.get(name="ssn")
    req = submit(analyst, restricted_dataset, columns=[ssn], level="write")
    body = signed_in(owner).get("/portal/inbox/").content.decode()
    assert f"#{req.pk}" in body and "High risk" in body
    assert "ssn (US social security number)" in body and "Restricted data" in body and "write access" in body
    assert "payroll audit" in body and "Already holds" in body
    assert "Nothing waits for you" in signed_in(officer).get("/portal/inbox/").content.decode()  # not yet
    assert "Nothing waits for you" in signed_in(other_owner).get("/portal/inbox/").content.decode()
    assert "Nothing waits for you" in signed_in(analyst).get("/portal/inbox/").content.decode()  # own request
    access_request_approve(access_request=req, approver=owner)
    assert f"#{req.pk}" in signed_in(officer).get("/portal/inbox/").content.decode()


def test_decide_one_with_htmx_swaps_the_card(analyst: User, owner: User, restricted_dataset: Dataset) -> None:
    req = submit(analyst, restricted_dataset)
    client = signed_in(owner)
    htmx = {"HX-Request": "true"}
    refused = client.post(
        "/portal/inbox/decide/", {"ids": req.pk, f"stage_{req.pk}": "owner", "decision": "deny"}, headers=htmx
    ).content.decode()
    assert f'id="req-{req.pk}"' in refused and "Say why you deny the request" in refused and 'name="comment"' in refused
    req.refresh_from_db()
    assert req.state == "pending"
    done = client.post(
        "/portal/inbox/decide/",
        {"ids": req.pk, f"stage_{req.pk}": "owner", "decision": "approve", "comment": "ok"},
        headers=htmx,
    ).content.decode()
    assert "your stage is approved; it now waits for the security officer" in done
    req.refresh_from_db()
    assert req.current_stage == "security_officer"
    assert AuditEvent.objects.filter(action="access_request.stage_approved", actor=owner).exists()


def test_bulk_decisions_report_each_refusal(analyst: User, owner: User, make_dataset: Callable[..., Dataset]) -> None:
    reqs = [submit(analyst, make_dataset(f"t{i}", owner=owner, classification="confidential")) for i in range(3)]
    data: dict[str, object] = {"ids": [r.pk for r in reqs] + ["junk"], "decision": "deny", "comment": "not now"}
    data.update({f"stage_{r.pk}": "owner" for r in reqs})
    data[f"stage_{reqs[2].pk}"] = "security_officer"  # a stale page: that stage is not the current one
    response = signed_in(owner).post("/portal/inbox/decide/", data, follow=True)
    body = response.content.decode()
    assert "2 requests denied" in body and f"Request #{reqs[2].pk}:" in body
    states = [AccessRequest.objects.get(pk=r.pk).state for r in reqs]
    assert states == ["denied", "denied", "pending"]
    nothing = signed_in(owner).post("/portal/inbox/decide/", {"decision": "approve"}, follow=True)
    assert "Select at least one request" in nothing.content.decode()
    assert signed_in(owner).get("/portal/inbox/decide/").status_code == 405


def test_inbox_query_count_does_not_grow(analyst: User, owner: User, make_dataset: Callable[..., Dataset]) -> None:
    def count() -> int:
        client = signed_in(owner)
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/portal/inbox/").status_code == 200
        return len(ctx)

    submit(analyst, make_dataset("first", owner=owner, classification="confidential", pii={"amount": "email"}))
    before = count()
    for i in range(8):
        submit(analyst, make_dataset(f"more{i}", owner=owner, classification="restricted", pii={"id": "ssn"}))
    assert count() == before


def test_already_holds_shows_only_what_the_approver_may_see(
    analyst: User, owner: User, other_owner: User, officer: User, make_dataset: Callable[..., Dataset]
) -> None:
    theirs = make_dataset("payroll", schema="finance", owner=other_owner, classification="confidential")
    access_request_approve(access_request=submit(analyst, theirs), approver=other_owner)
    mine = make_dataset("ledger", schema="finance", owner=owner, classification="confidential")
    access_request_approve(access_request=submit(analyst, mine), approver=owner)
    waiting = submit(analyst, make_dataset("budget", schema="finance", owner=owner, classification="confidential"))
    body = signed_in(owner).get("/portal/inbox/").content.decode()
    card = body[body.index(f'id="req-{waiting.pk}"') :]
    assert "1 grant: finance.ledger (read)" in card and "finance.payroll" not in body
    access_request_approve(access_request=waiting, approver=owner)
    officer_view = submit(analyst, make_dataset("x", classification="restricted", owner=owner))
    access_request_approve(access_request=officer_view, approver=owner)
    everything = signed_in(officer).get("/portal/inbox/").content.decode()
    assert "finance.payroll (read)" in everything and "finance.ledger (read)" in everything


def test_deciding_requests_one_may_not_see_reveals_nothing(
    analyst: User, owner: User, other_owner: User, restricted_dataset: Dataset
) -> None:
    req = submit(analyst, restricted_dataset)
    stranger = signed_in(other_owner)
    body = stranger.post(
        "/portal/inbox/decide/", {"ids": [req.pk, 999999, "9" * 70], "decision": "approve"}, follow=True
    ).content.decode()
    assert f"Request #{req.pk}: not found." in body and "Request #999999: not found." in body
    assert "hr.employees" not in body and "owner" not in body.split('class="messages"')[1].split("</ul>")[0]
    req.refresh_from_db()
    assert req.state == "pending" and req.current_stage == "owner"
    assert not AuditEvent.objects.filter(actor=other_owner).exclude(action="auth.login").exists()  # no trail to flood
    many = stranger.post("/portal/inbox/decide/", {"ids": list(range(1, 200)), "decision": "deny"}, follow=True)
    assert "at most 100" in many.content.decode()
