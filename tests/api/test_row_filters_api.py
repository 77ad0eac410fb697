"""Row filters through the API and the admin: defined by the dataset's owner, refused with the
field and the offending part when outside the grammar, asked for by a request that then carries the
grantee's values; the list's query count does not grow."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import User
from audit.models import AuditEvent
from governance.models import Dataset, RowFilter
from governance.services.row_filters import grantee_attributes_set, row_filter_define
from tests.api.conftest import error

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]


@pytest.fixture
def sales(make_dataset: Callable[..., Dataset], owner: User) -> Dataset:
    return make_dataset("orders", owner=owner, schema="sales", columns=("id", "region", "tenant_id", 'Ré"gion x'))


@pytest.mark.parametrize(
    ("expression", "part"),
    [
        ("1=1; DROP TABLE x", "one expression"),
        ("lower(region) = 'eu'", "function call"),
        ("region IN (SELECT region FROM sales.other)", "subquery"),
        ("nope = 'x'", "Unknown column nope"),
    ],
)
def test_an_invalid_filter_is_a_400_naming_the_expression(
    api: Api, sales: Dataset, owner: User, expression: str, part: str
) -> None:
    response = api(owner).post(
        "/api/v1/row-filters/", {"dataset": sales.pk, "name": "bad", "expression": expression}, format="json"
    )
    assert response.status_code == 400, response.content
    body = error(response)
    assert body["field"] == "expression" and part in body["message"]
    assert not RowFilter.objects.exists()
    assert AuditEvent.objects.filter(action="row_filter.define", outcome="denied").exists()


def test_the_owner_defines_a_filter_and_a_request_carries_the_grantees_values(
    api: Api, sales: Dataset, owner: User, analyst: User, gov_admin: User
) -> None:
    made = api(owner).post(
        "/api/v1/row-filters/",
        {"dataset": sales.pk, "name": "own tenant", "expression": "tenant_id = grantee.tenant"},
        format="json",
    )
    assert made.status_code == 201, made.content
    assert AuditEvent.objects.filter(action="row_filter.defined", actor=owner).exists()
    assert (
        api(analyst)
        .post("/api/v1/row-filters/", {"dataset": sales.pk, "name": "x", "expression": "region = 'x'"}, format="json")
        .status_code
        == 403
    )

    ask = {"dataset": sales.pk, "justification": "billing", "duration_days": 7, "row_filter": made.json()["id"]}
    refused = api(analyst).post("/api/v1/access-requests/", ask, format="json")
    assert refused.status_code == 400 and error(refused)["field"] == "row_filter"
    assert "tenant" in error(refused)["message"]

    grantee_attributes_set(user=analyst, values={"tenant": "acme"}, actor=gov_admin)
    asked = api(analyst).post("/api/v1/access-requests/", ask, format="json")
    assert asked.status_code == 201, asked.content
    shown = asked.json()["row_filter"]
    assert shown["name"] == "own tenant" and shown["values"] == {"tenant": "acme"}
    assert shown["compiled"] == "(\"tenant_id\" = 'acme')"


def test_the_filter_list_query_count_does_not_grow(
    api: Api, sales: Dataset, owner: User, make_dataset: Callable[..., Dataset], django_assert_num_queries: Any
) -> None:
    client = api(owner)
    row_filter_define(dataset=sales, name="EU", expression="region = 'EU'", actor=owner)
    client.get("/api/v1/row-filters/")
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        assert client.get("/api/v1/row-filters/").status_code == 200
    for i in range(6):
        more = make_dataset(f"more_{i}", owner=owner, schema="sales", columns=("id", "region"))
        row_filter_define(dataset=more, name="EU", expression="region = 'EU'", actor=owner)
    with django_assert_num_queries(len(ctx)):
        assert client.get("/api/v1/row-filters/").json()["count"] == 7


def test_the_admin_shows_an_invalid_filter_as_a_form_error(sales: Dataset, superuser: User) -> None:
    client = Client()
    client.force_login(superuser)
    url = "/admin/governance/rowfilter/add/"
    page = client.post(url, {"dataset": sales.pk, "name": "bad", "expression": "region = (SELECT 1)"})
    assert page.status_code == 200
    assert "subquery" in page.content.decode() and not RowFilter.objects.exists()
    done = client.post(url, {"dataset": sales.pk, "name": "hostile", "expression": '"Ré""gion x" = \'x\''})
    assert done.status_code == 302, done.content.decode()[:2000]
    assert RowFilter.objects.get(name="hostile").tree == ["cmp", "=", 'Ré"gion x', ["const", "x"]]
    assert AuditEvent.objects.filter(action="row_filter.defined", actor=superuser).exists()


def test_grantee_attributes_must_be_a_map(superuser: User, analyst: User) -> None:
    client = Client()
    client.force_login(superuser)
    page = client.post("/admin/governance/granteeattributes/add/", {"user": analyst.pk, "values": '["a"]'})
    assert page.status_code == 200 and "JSON object" in page.content.decode()


def test_the_plan_shows_the_policy_with_the_grantees_values_and_the_first_filter_changes_pending_plans(
    sales: Dataset, owner: User, analyst: User, other_owner: User, gov_admin: User
) -> None:
    from governance.backends import plan_digest
    from governance.provisioning import own_plan
    from governance.services.requests import access_request_submit

    plain = access_request_submit(requester=other_owner, dataset=sales, justification="x", duration=dt.timedelta(1))
    before = own_plan(plain).lines
    digest = plan_digest(plain)
    row_filter_define(dataset=sales, name="own tenant", expression="tenant_id = grantee.tenant", actor=owner)
    sales.refresh_from_db()
    plain.dataset.refresh_from_db()
    after = own_plan(plain).lines
    assert [line for line in after if line not in before] == [
        next(line for line in after if line.startswith("CREATE POLICY") and "USING (true)" in line)
    ]
    assert plan_digest(plain) != digest  # a pending approval of the old plan is refused

    req = tenant_request(sales, analyst, gov_admin)
    policy = next(line for line in own_plan(req).lines if line.startswith("CREATE POLICY"))
    assert "USING ((\"tenant_id\" = 'acme'))" in policy and "AS PERMISSIVE FOR SELECT TO" in policy


def test_the_approver_sees_the_filter_and_the_grantees_values_in_the_portal_and_the_admin(
    sales: Dataset, owner: User, analyst: User, gov_admin: User
) -> None:
    from django.urls import reverse

    row_filter_define(dataset=sales, name="own tenant", expression="tenant_id = grantee.tenant", actor=owner)
    req = tenant_request(sales, analyst, gov_admin)
    shown = "own tenant: tenant_id = grantee.tenant with grantee.tenant = &#x27;acme&#x27;"
    client = Client()
    client.force_login(owner)
    page = client.get(reverse("portal:request_detail", args=[req.pk])).content.decode()
    assert shown in page and "USING ((&quot;tenant_id&quot; = &#x27;acme&#x27;))" in page
    client.force_login(gov_admin)
    admin_page = client.get(f"/admin/governance/accessrequest/{req.pk}/change/").content.decode()
    assert shown in admin_page


def test_a_filter_on_a_source_that_cannot_enforce_it_is_refused(api: Api, owner: User, classifications: Any) -> None:
    from governance.models import DataSource

    lake = DataSource.objects.create(name="lake", kind="aws", aws_endpoint_url="https://s3.example.com")
    prefix = Dataset.objects.create(
        source=lake, schema="bucket", name="exports/", classification=classifications["internal"], owner=owner
    )
    response = api(gov_admin_of(owner)).post(
        "/api/v1/row-filters/", {"dataset": prefix.pk, "name": "x", "expression": "id = 1"}, format="json"
    )
    assert response.status_code == 400 and error(response)["field"] == "dataset"
    assert "PostgreSQL sources only" in error(response)["message"]


def gov_admin_of(user: User) -> User:
    user.is_superuser = True
    user.save(update_fields=["is_superuser"])
    return user


def tenant_request(sales: Dataset, analyst: User, gov_admin: User) -> Any:
    """The analyst (tenant acme) asks for sales' one filter."""
    from governance.services.requests import access_request_submit

    grantee_attributes_set(user=analyst, values={"tenant": "acme"}, actor=gov_admin)
    return access_request_submit(
        requester=analyst,
        dataset=sales,
        justification="billing",
        duration=dt.timedelta(1),
        row_filter=sales.row_filters.get(),
    )


def test_the_owner_sets_force_and_the_confirmed_readers(api: Api, sales: Dataset, owner: User, analyst: User) -> None:
    body = {"dataset": sales.pk, "force": True, "confirmed": ["reporting_app", " reporting_app "]}
    assert api(analyst).post("/api/v1/row-filters/security/", body, format="json").status_code == 403
    done = api(owner).post("/api/v1/row-filters/security/", body, format="json")
    assert done.status_code == 200, done.content
    sales.refresh_from_db()
    assert sales.row_security == {"force": True, "confirmed": ["reporting_app"]}
    assert AuditEvent.objects.filter(action="row_security.set", actor=owner).exists()
    assert AuditEvent.objects.filter(action="row_security.set", outcome="denied", actor=analyst).exists()


def test_the_portal_form_offers_the_datasets_filters_and_previews_the_policy(
    sales: Dataset, owner: User, analyst: User, gov_admin: User
) -> None:
    from django.urls import reverse

    row_filter_define(dataset=sales, name="own tenant", expression="tenant_id = grantee.tenant", actor=owner)
    grantee_attributes_set(user=analyst, values={"tenant": "acme"}, actor=gov_admin)
    client = Client()
    client.force_login(analyst)
    form = client.get(reverse("portal:request", args=[sales.pk])).content.decode()
    assert "own tenant: tenant_id = grantee.tenant" in form
    chosen = sales.row_filters.get()
    body = {"dataset": sales.pk, "level": "read", "duration": "1", "duration_unit": "days", "row_filter": chosen.pk}
    preview = client.post(reverse("portal:request_preview", args=[sales.pk]), body).content.decode()
    assert "USING ((&quot;tenant_id&quot; = &#x27;acme&#x27;))" in preview
    done = client.post(reverse("portal:request", args=[sales.pk]), body | {"justification": "billing"})
    assert done.status_code == 302, done.content.decode()[:3000]
    assert analyst.access_requests_made.get().row_filter_snapshot["values"] == {"tenant": "acme"}
