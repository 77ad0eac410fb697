"""My requests (list, timeline, live status fragment, cancel) and my grants (renew, give up)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from audit.models import AuditEvent
from governance.models import AccessRequest, Dataset, DataSource, Grant, JobStatus, ProvisioningJob
from governance.services.requests import access_request_approve, access_request_deny, access_request_submit

pytestmark = pytest.mark.django_db


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def submit(analyst: User, dataset: Dataset, **kw: Any) -> AccessRequest:
    return access_request_submit(
        requester=analyst, dataset=dataset, justification="payroll audit", duration=dt.timedelta(days=3), **kw
    )


def test_my_requests_lists_mine_with_status_and_denial_reason(
    analyst: User, owner: User, officer: User, restricted_dataset: Dataset, make_dataset: Callable[..., Dataset]
) -> None:
    waiting = submit(analyst, restricted_dataset)
    other = make_dataset("ledger", schema="finance", owner=owner, classification="confidential")
    denied = submit(analyst, other)
    access_request_deny(access_request=denied, approver=owner, comment="use the aggregated view instead")
    submit(officer, make_dataset("other", owner=owner))  # not mine
    body = signed_in(analyst).get("/portal/requests/").content.decode()
    assert f"#{waiting.pk}" in body and "Waiting for dataset owner" in body
    assert f"#{denied.pk}" in body and "use the aggregated view instead" in body
    assert "public.other" not in body
    only = signed_in(analyst).get("/portal/requests/?state=denied").content.decode()
    assert f"#{waiting.pk}<" not in only and f"#{denied.pk}<" in only


def test_request_timeline_follows_approvals_and_provisioning(
    analyst: User, owner: User, officer: User, restricted_dataset: Dataset
) -> None:
    req = submit(analyst, restricted_dataset)
    client = signed_in(analyst)
    url = f"/portal/requests/{req.pk}/"
    body = client.get(url).content.decode()
    assert "Submitted by analyst" in body and "Dataset owner or steward: waiting for a decision" in body
    assert 'hx-trigger="every 10s"' in body  # a pending request refreshes slowly
    access_request_approve(access_request=req, approver=owner, comment="fine by me")
    access_request_approve(access_request=req, approver=officer)
    fragment = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert fragment.lstrip().startswith('<section id="request-status"')  # the fragment only
    assert "Dataset owner or steward: approved by owner" in fragment and "fine by me" in fragment
    assert "Security officer: approved by officer" in fragment
    # Provisioning is off on this fictional source: approved, applied by its team, nothing moves.
    grant = Grant.objects.get(source_request=req)
    assert "Approved (not provisioned by the portal)" in fragment and "hx-trigger" not in fragment
    # On a source the portal provisions, a queued job keeps the block refreshing every 2 s...
    DataSource.objects.filter(pk=grant.dataset.source_id).update(provisioning_enabled=True)
    job = ProvisioningJob.objects.create(grant=grant, action="apply", status=JobStatus.QUEUED, attempts=1)
    moving = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "Provisioning: in progress (attempt 2)" in moving and 'hx-trigger="every 2s"' in moving
    assert 'class="spinner"' in moving
    # A job waiting for its database to answer again says so (and why), still refreshing...
    ProvisioningJob.objects.filter(pk=job.pk).update(waiting_since=timezone.now(), last_error="cannot connect")
    waiting = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "Provisioning: waiting for the database to answer again" in waiting and "cannot connect" in waiting
    assert 'hx-trigger="every 2s"' in waiting
    # ...and a job that gave up says why, and stops the refreshing.
    ProvisioningJob.objects.filter(pk=job.pk).update(
        status=JobStatus.FAILED, last_error="target unreachable", waiting_since=None
    )
    Grant.objects.filter(pk=grant.pk).update(status="failed")
    failed = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "Provisioning failed" in failed and "target unreachable" in failed and "hx-trigger" not in failed


def test_nobody_else_sees_my_request(analyst: User, other_owner: User, restricted_dataset: Dataset) -> None:
    req = submit(analyst, restricted_dataset)
    assert signed_in(other_owner).get(f"/portal/requests/{req.pk}/").status_code == 404


def test_cancel_my_pending_request(analyst: User, restricted_dataset: Dataset, owner: User) -> None:
    req = submit(analyst, restricted_dataset)
    assert signed_in(owner).post(f"/portal/requests/{req.pk}/cancel/").status_code == 302
    req.refresh_from_db()
    assert req.state == "pending"  # the owner cannot cancel someone's request
    response = signed_in(analyst).post(f"/portal/requests/{req.pk}/cancel/", {"reason": "wrong table"}, follow=True)
    req.refresh_from_db()
    assert req.state == "cancelled" and "cancelled" in response.content.decode()
    assert signed_in(analyst).get(f"/portal/requests/{req.pk}/cancel/").status_code == 405


def test_my_grants_renew_and_give_up(analyst: User, owner: User, officer: User, restricted_dataset: Dataset) -> None:
    req = submit(analyst, restricted_dataset, columns=[restricted_dataset.columns.get(name="ssn")])
    access_request_approve(access_request=req, approver=owner)
    access_request_approve(access_request=req, approver=officer)
    grant = Grant.objects.get(source_request=req)
    client = signed_in(analyst)
    body = client.get("/portal/grants/").content.decode()
    assert "hr.employees" in body and "expires in" in body and f"?renew={grant.pk}" in body
    renew = client.get(f"/portal/datasets/{restricted_dataset.pk}/request/?renew={grant.pk}").content.decode()
    ssn = restricted_dataset.columns.get(name="ssn")
    assert "Renewing" in renew
    checked = [line for line in renew.splitlines() if 'type="checkbox" name="columns"' in line and "checked" in line]
    assert len(checked) == 1 and f'value="{ssn.pk}"' in checked[0]
    assert "payroll audit" in renew
    # Someone else's grant cannot be given up through my page.
    assert signed_in(owner).post(f"/portal/grants/{grant.pk}/relinquish/").status_code == 404
    response = client.post(f"/portal/grants/{grant.pk}/relinquish/", follow=True)
    grant.refresh_from_db()
    assert grant.revoked_at is not None and grant.revoked_by == analyst
    assert "You gave up your access" in response.content.decode()
    assert AuditEvent.objects.filter(action="grant.revoked", actor=analyst).exists()
    ended = client.get("/portal/grants/").content.decode()
    assert "Ended in the last 30 days" in ended and "relinquished by the grantee" in ended


def test_reveal_page_refuses_without_a_temporary_login(
    analyst: User, owner: User, officer: User, restricted_dataset: Dataset
) -> None:
    req = submit(analyst, restricted_dataset)
    access_request_approve(access_request=req, approver=owner)
    access_request_approve(access_request=req, approver=officer)
    grant = Grant.objects.get(source_request=req)
    response = signed_in(analyst).post(f"/portal/grants/{grant.pk}/reveal/")
    assert response.status_code == 200 and 'role="alert"' in response.content.decode()
    assert "no-store" in response["Cache-Control"] or "no-cache" in response["Cache-Control"]


def test_access_pages_query_counts_do_not_grow(
    analyst: User, owner: User, officer: User, make_dataset: Callable[..., Dataset]
) -> None:
    def count(url: str) -> int:
        client = signed_in(analyst)
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        return len(ctx)

    first = make_dataset("d0", owner=owner, classification="confidential")
    submit(analyst, first)
    before = (count("/portal/requests/"), count("/portal/grants/"))
    for i in range(1, 8):
        req = submit(analyst, make_dataset(f"d{i}", owner=owner, classification="confidential"))
        if i % 2:
            access_request_approve(access_request=req, approver=owner)
    assert (count("/portal/requests/"), count("/portal/grants/")) == before


def test_the_end_of_access_moves_from_the_portal(
    analyst: User, owner: User, officer: User, other_owner: User, make_dataset: Callable[..., Dataset]
) -> None:
    """My grants → End earlier (the grantee); the dataset page → change (its approvers: more time is
    an approval); anyone else finds nothing. Times are read in the portal's time zone."""
    ledger = make_dataset("ledger", schema="finance", owner=owner)  # internal: the owner's stage only
    req = submit(analyst, ledger)
    access_request_approve(access_request=req, approver=owner)
    grant = Grant.objects.get(source_request=req)
    url = f"/portal/grants/{grant.pk}/end/"
    me = signed_in(analyst)
    assert f'href="{url}"' in me.get("/portal/grants/").content.decode()
    page = me.get(url).content.decode()
    assert "finance.ledger" in page and "can end at" in page and "Times are in UTC" in page

    sooner = timezone.localtime(grant.ends_at - dt.timedelta(days=1)).replace(second=0, microsecond=0)
    response = me.post(url, {"ends_at": sooner.strftime("%Y-%m-%dT%H:%M"), "reason": "done early"})
    assert response.status_code == 302 and response["Location"] == "/portal/grants/"
    grant.refresh_from_db()
    assert grant.ends_at == sooner
    event = AuditEvent.objects.get(action="grant.end_moved")
    assert event.actor == analyst and event.reason == "done early"

    # More time is not the grantee's to give: a form error, nothing changed.
    later = (sooner + dt.timedelta(days=5)).strftime("%Y-%m-%dT%H:%M")
    refused = me.post(url, {"ends_at": later, "reason": "more please"})
    assert refused.status_code == 200 and "separation of duties" in refused.content.decode()
    grant.refresh_from_db()
    assert grant.ends_at == sooner
    bad = me.post(url, {"ends_at": "next tuesday", "reason": "x"})
    assert bad.status_code == 200 and "Enter a valid date/time" in bad.content.decode()

    # Its owner gives more time from the dataset page.
    dataset_page = signed_in(owner).get(f"/portal/datasets/{ledger.pk}/").content.decode()
    assert f'href="{url}"' in dataset_page
    response = signed_in(owner).post(url, {"ends_at": later, "reason": "quarter close runs long"})
    assert response.status_code == 302 and response["Location"] == f"/portal/datasets/{ledger.pk}/"
    grant.refresh_from_db()
    assert timezone.localtime(grant.ends_at).strftime("%Y-%m-%dT%H:%M") == later

    # Somebody who may not revoke it does not find it.
    assert signed_in(other_owner).get(url).status_code == 404
    assert signed_in(other_owner).post(url, {"ends_at": later, "reason": "x"}).status_code == 404
