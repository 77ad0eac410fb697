"""/api/v1/column-tags/: suggestions with why, confirm/reject one, bulk decide (all or none, the
refusal names the id), the preview, strict filters, scopes, and query counts that do not grow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from governance.models import ColumnTag, Dataset, TagStatus
from tests.api.conftest import error
from tests.governance.stewardship_world import Estate, build, suggest

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]


@pytest.fixture
def estate(make_dataset: Callable[..., Dataset], owner: User, other_owner: User) -> Estate:
    return build(make_dataset, owner, other_owner)


def test_a_steward_lists_their_suggestions_with_why(api: Api, estate: Estate, owner: User) -> None:
    body = api(owner).get("/api/v1/column-tags/?status=suggested").json()
    assert body["count"] == 2
    email = next(r for r in body["results"] if r["id"] == estate.email.pk)
    assert email["dataset"]["name"] == "customers" and email["column"] == "email" and email["tag"] == "email"
    assert email["reasons"][0] == "email_pattern: 73% of 40 sampled values match name@domain"
    assert email["findings"][0]["share"] == 0.725 and email["classification"] == "internal"


def test_strict_filters(api: Api, estate: Estate, officer: User) -> None:
    client = api(officer)
    assert client.get("/api/v1/column-tags/?tag=iban").json()["count"] == 1
    assert client.get(f"/api/v1/column-tags/?dataset={estate.customers.pk}").json()["count"] == 2
    assert client.get("/api/v1/column-tags/?min_confidence=95").json()["count"] == 1
    for bad, field in (("min_confidence=0.5", "min_confidence"), ("min_confidence=101", "min_confidence"),
                       ("status=maybe", "status"), ("dataset=", "dataset")):  # fmt: skip
        response = client.get(f"/api/v1/column-tags/?{bad}")
        assert response.status_code == 400, bad
        assert error(response)["field"] == field


def test_confirm_and_reject_one(api: Api, estate: Estate, owner: User) -> None:
    client = api(owner)
    confirmed = client.post(f"/api/v1/column-tags/{estate.email.pk}/confirm/", format="json")
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "confirmed"
    assert confirmed.json()["decided_by"] == "owner" and confirmed.json()["classification"] == "confidential"
    rejected = client.post(f"/api/v1/column-tags/{estate.name.pk}/reject/", format="json")
    assert rejected.json()["status"] == "rejected"
    # A steward cannot drop a confirmed tag (403: they see it, they may not do this).
    again = client.post(f"/api/v1/column-tags/{estate.email.pk}/reject/", format="json")
    assert again.status_code == 403 and error(again)["code"] == "not_permitted"


def test_someone_elses_tag_is_a_404(api: Api, estate: Estate, owner: User, analyst: User) -> None:
    assert api(owner).get(f"/api/v1/column-tags/{estate.iban.pk}/").status_code == 404
    assert api(analyst).post(f"/api/v1/column-tags/{estate.email.pk}/confirm/", format="json").status_code == 404
    assert ColumnTag.objects.get(pk=estate.email.pk).status == TagStatus.SUGGESTED


def test_bulk_decide_all_or_nothing_names_the_id(api: Api, estate: Estate, owner: User, officer: User) -> None:
    client = api(owner)
    refused = client.post(
        "/api/v1/column-tags/decide/",
        {"decision": "confirm", "ids": [estate.email.pk, estate.iban.pk]},
        format="json",
    )
    assert refused.status_code == 404
    assert error(refused)["details"] == {"id": estate.iban.pk} and error(refused)["field"] == "ids"
    assert ColumnTag.objects.get(pk=estate.email.pk).status == TagStatus.SUGGESTED
    # The officer sees all three, but a confirmed tag... here: the owner confirmed email first.
    client.post(f"/api/v1/column-tags/{estate.email.pk}/confirm/", format="json")
    not_allowed = client.post(
        "/api/v1/column-tags/decide/", {"decision": "reject", "ids": [estate.name.pk, estate.email.pk]}, format="json"
    )
    assert not_allowed.status_code == 403
    assert error(not_allowed)["message"].startswith(f"Tag #{estate.email.pk} (sales.customers.email, Email address)")
    assert ColumnTag.objects.get(pk=estate.name.pk).status == TagStatus.SUGGESTED  # undone with it
    done = api(officer).post(
        "/api/v1/column-tags/decide/", {"decision": "confirm", "ids": [estate.name.pk, estate.iban.pk]}, format="json"
    )
    assert done.status_code == 200, done.json()
    assert [t["status"] for t in done.json()["decided"]] == ["confirmed", "confirmed"]
    assert done.json()["preview"]["raised"] == [
        {
            "dataset": estate.payments.pk,
            "qualified_name": "finance.payments",
            "before": "Internal",
            "after": "Confidential",
        }
    ]


def test_bulk_and_preview_input_is_checked(api: Api, estate: Estate, owner: User) -> None:
    client = api(owner)
    for body, field in (
        ({"decision": "confirm", "ids": []}, "ids"),
        ({"decision": "confirm", "ids": ["1"]}, "ids"),
        ({"decision": "later", "ids": [estate.email.pk]}, "decision"),
        ({"decision": "confirm", "ids": list(range(1, 102))}, "ids"),
    ):
        response = client.post("/api/v1/column-tags/decide/", body, format="json")
        assert response.status_code == 400, body
        assert error(response)["field"] == field
    assert client.post("/api/v1/column-tags/preview/", {"ids": 3}, format="json").status_code == 400


def test_the_preview_writes_nothing_and_needs_only_read(api: Api, estate: Estate, owner: User) -> None:
    reader = api(owner, scopes="read")
    body = reader.post("/api/v1/column-tags/preview/", {"ids": [estate.email.pk]}, format="json").json()
    assert body["summary"].startswith("Confirming Email address on sales.customers.email raises sales.customers")
    assert [v["qualified_name"] for v in body["views"]] == ["reporting.customer_emails", "reporting.mailing"]
    assert ColumnTag.objects.get(pk=estate.email.pk).status == TagStatus.SUGGESTED
    # Deciding needs the approve scope.
    refused = reader.post(f"/api/v1/column-tags/{estate.email.pk}/confirm/", format="json")
    assert refused.status_code == 403 and "approve" in error(refused)["message"]


def test_list_query_count_does_not_grow(
    api: Api,
    estate: Estate,
    owner: User,
    make_dataset: Callable[..., Dataset],
    django_assert_num_queries: Any,
) -> None:
    client = api(owner)
    client.get("/api/v1/column-tags/")

    def count() -> int:
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/api/v1/column-tags/").status_code == 200
        return len(ctx)

    before = count()
    for i in range(8):
        more = make_dataset(f"more_{i}", schema="sales", owner=owner, columns=("id", "mail"))
        suggest(more, "mail", "email", 0.9, [])
    with django_assert_num_queries(before):
        assert client.get("/api/v1/column-tags/").json()["count"] == 10
