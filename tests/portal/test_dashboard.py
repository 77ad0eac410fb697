"""The dashboard's charts: the numbers behind them, per audience, and a constant query count."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from governance.models import Dataset, DriftFinding, JobAction, JobStatus, ProvisioningJob
from governance.services.requests import access_request_approve, access_request_submit

pytestmark = pytest.mark.django_db


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def desc(body: str, chart: str) -> str:
    start = body.index(f'id="{chart}-sd">') + len(f'id="{chart}-sd">')
    return body[start : body.index("</desc>", start)]


def test_dashboard_charts_count_what_they_say(
    analyst: User,
    owner: User,
    officer: User,
    other_owner: User,
    make_dataset: Callable[..., Dataset],
    restricted_dataset: Dataset,
) -> None:
    now = timezone.now()
    with time_machine.travel(now - dt.timedelta(days=5)):
        old = access_request_submit(
            requester=analyst, dataset=restricted_dataset, justification="x", duration=dt.timedelta(days=3)
        )
    ledger = make_dataset("ledger", owner=owner, classification="confidential")
    approved = access_request_submit(
        requester=analyst, dataset=ledger, justification="y", duration=dt.timedelta(days=2)
    )
    access_request_approve(access_request=approved, approver=owner)
    ProvisioningJob.objects.create(
        grant=approved.grant, action=JobAction.APPLY, status=JobStatus.FAILED, finished_at=now, last_error="boom"
    )
    DriftFinding.objects.create(
        source=ledger.source,
        dataset=ledger,
        principal="x",
        object_schema="public",
        object_name="ledger",
        privilege="SELECT",
        kind="unexpected",
        detail="d",
        found_at=now,
        run_id=uuid.uuid4(),
    )
    body = signed_in(officer).get("/portal/dashboard/").content.decode()
    assert "all datasets" in body
    assert "3 to 7 days: 1." in desc(body, "pending-age") and "under a day: 0." in desc(body, "pending-age")
    assert "Confidential: 1." in desc(body, "by-classification")
    assert sum(int(part.split(": ")[1]) for part in desc(body, "expiring").split(". ") if ": " in part) == 1
    assert "warehouse: 1." in desc(body, "drift")
    assert sum(int(part.split(": ")[1]) for part in desc(body, "failures").split(". ") if ": " in part) == 1
    assert f"#{old.pk}" not in body  # numbers, not rows
    mine = signed_in(analyst).get("/portal/dashboard/").content.decode()
    assert "your own requests and grants" in mine
    assert "3 to 7 days: 1." in desc(mine, "pending-age") and "Confidential: 1." in desc(mine, "by-classification")
    assert 'id="drift-sd"' not in mine  # drift is for those who govern datasets: an empty chart
    # Another owner sees the numbers of their own datasets only: none of the above.
    make_dataset("theirs", owner=other_owner)
    theirs = signed_in(other_owner).get("/portal/dashboard/").content.decode()
    assert "the datasets you govern" in theirs and theirs.count("Nothing to show") == 5


def test_dashboard_query_count_does_not_grow(owner: User, analyst: User, make_dataset: Callable[..., Dataset]) -> None:
    def count(user: User) -> int:
        client = signed_in(user)
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/portal/dashboard/").status_code == 200
        return len(ctx)

    make_dataset("first", owner=owner)
    before = (count(owner), count(analyst))
    for i in range(6):
        ds = make_dataset(f"d{i}", owner=owner, classification="confidential")
        req = access_request_submit(requester=analyst, dataset=ds, justification="x", duration=dt.timedelta(days=i + 1))
        if i % 2:
            access_request_approve(access_request=req, approver=owner)
    assert (count(owner), count(analyst)) == before
