"""Changelists cost the same number of queries with 3 rows as with 30: no N+1."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from governance.models import ColumnTag, Dataset, TagStatus
from governance.services.requests import access_request_approve, access_request_submit

pytestmark = pytest.mark.django_db


def populate(n: int, analyst: Any, owner: Any, officer: Any, make_dataset: Callable[..., Dataset]) -> None:
    start = Dataset.objects.count()
    for i in range(start, start + n):
        ds = make_dataset(f"table_{i}", classification="confidential", owner=owner, columns=("id", "email"))
        ColumnTag.objects.create(column=ds.columns.get(name="email"), tag="email", status=TagStatus.SUGGESTED)
        req = access_request_submit(requester=analyst, dataset=ds, justification="why", duration=dt.timedelta(days=5))
        if i % 2:
            access_request_approve(access_request=req, approver=owner)


def count_queries(client: Client, url: str) -> int:
    client.get(url)  # warm process-wide caches (content types) so that only the page itself is counted
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(ctx.captured_queries)


# (changelist url name, pinned query count for a governance admin)
CHANGELISTS = [
    ("admin:governance_accessrequest_changelist", 8),
    ("admin:governance_grant_changelist", 8),
    ("admin:governance_dataset_changelist", 7),
    ("admin:governance_columntag_changelist", 7),
    ("admin:governance_approval_changelist", 5),
    ("admin:audit_auditevent_changelist", 10),  # one of them: the redactions in force (audit.redaction)
    ("admin:governance_datasource_changelist", 5),
]


@pytest.mark.parametrize(("url_name", "pinned"), CHANGELISTS)
def test_changelist_query_count_is_pinned(url_name, pinned, analyst, owner, officer, superuser, make_dataset):
    client = Client()
    client.force_login(superuser)
    url = reverse(url_name)
    populate(3, analyst, owner, officer, make_dataset)
    small = count_queries(client, url)
    populate(27, analyst, owner, officer, make_dataset)
    large = count_queries(client, url)
    assert small == large, f"{url_name}: {small} queries with few rows, {large} with many (N+1)"
    assert large == pinned, f"{url_name}: {large} queries; pinned at {pinned}"


def test_owner_request_list_query_count(analyst, owner, officer, make_dataset):
    """The owner's filtered view (guardian-scoped queryset) does not grow with rows either."""
    client = Client()
    client.force_login(owner)
    url = reverse("admin:governance_accessrequest_changelist") + "?inbox=mine"
    populate(2, analyst, owner, officer, make_dataset)
    small = count_queries(client, url)
    populate(20, analyst, owner, officer, make_dataset)
    # 12: the sidebar asks once whether the owner stewards anything (their Column tags page).
    assert count_queries(client, url) == small == 12
