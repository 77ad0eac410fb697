"""The privacy pages without a target: the owner's declaration (portal, workbench, refusals), the
approver's budget on the inbox card and in the workbench, and the grants pages' query counts."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit.models import AuditEvent
from governance.models import AccessRequest, Column, Dataset, Grant, ProvisioningJob
from governance.services.requests import access_request_submit
from privacy.models import PrivacyPolicy
from privacy.services.policy import Bound, Categories, privacy_policy_save
from tests.privacy.conftest import grant_aggregate

pytestmark = pytest.mark.django_db


@pytest.fixture
def census(make_dataset: Callable[..., Dataset], owner: Any) -> Dataset:
    ds = numeric(make_dataset("census", owner=owner, columns=("person_id", "age", "region")), "age")
    privacy_policy_save(
        dataset=ds,
        actor=owner,
        aggregates_only=True,
        unit_column="person_id",
        bounds=[Bound("age", 0, 120)],
        categoricals=[Categories("region", ["EU", "US"])],
    )
    ds.refresh_from_db()
    return ds


def numeric(ds: Dataset, *names: str) -> Dataset:
    """Test arrangement: the catalog says these columns are integers (as a sync of the source would)."""
    Column.objects.filter(dataset=ds, name__in=names).update(data_type="integer")
    return ds


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_owner_declares_the_policy_on_the_portal_page_and_it_is_audited(
    make_dataset: Callable[..., Dataset], owner: Any
) -> None:
    ds = numeric(make_dataset("visits", owner=owner, columns=("patient_id", "cost", "ward")), "cost")
    url = reverse("privacy:dataset_policy", args=[ds.pk])
    form = {
        "aggregates_only": "on",
        "unit_column": "patient_id",
        "contribution_limit": "3",
        "bounds": "cost 0 5000",
        "categoricals": "ward: A, B, C",
    }
    response = signed_in(owner).post(url, form)
    assert response.status_code == 302, response.content
    ds.refresh_from_db()
    policy = PrivacyPolicy.objects.get(dataset=ds)
    assert ds.aggregates_only and policy.unit_column == "patient_id" and policy.contribution_limit == 3
    assert [(b.column, b.lower, b.upper) for b in policy.bounds.all()] == [("cost", Decimal(0), Decimal(5000))]
    assert [c.categories for c in policy.categoricals.all()] == [["A", "B", "C"]]
    event = AuditEvent.objects.get(action="privacy.policy_saved", outcome="success")
    assert event.actor_id == owner.pk and event.metadata["bounds"] == {"cost": ["0", "5000"]}
    page = signed_in(owner).get(url).content.decode()
    assert "cost 0 5000" in page and "ward: A, B, C" in page


def test_bad_declarations_are_form_errors_naming_what_is_wrong(census: Dataset, owner: Any, analyst: Any) -> None:
    url = reverse("privacy:dataset_policy", args=[census.pk])
    base = {"aggregates_only": "on", "contribution_limit": "1", "categoricals": ""}
    upside_down = signed_in(owner).post(url, base | {"bounds": "age 10 5"})
    assert upside_down.status_code == 400
    assert "The lower bound of age must be below its upper bound." in upside_down.content.decode()
    unknown = signed_in(owner).post(url, base | {"bounds": "salary 0 10"})
    assert unknown.status_code == 400 and "&#x27;salary&#x27; is not a column" in unknown.content.decode()
    text = signed_in(owner).post(url, base | {"bounds": "region 0 10"})
    assert text.status_code == 400 and "region is text, not a number: it cannot be bounded." in text.content.decode()
    stranger = signed_in(analyst).post(url, base | {"bounds": "age 0 200"})
    assert stranger.status_code == 400 and "Only the owners and stewards" in stranger.content.decode()
    assert [(b.lower, b.upper) for b in PrivacyPolicy.objects.get(dataset=census).bounds.all()] == [(0, 120)]
    assert AuditEvent.objects.filter(action="privacy.policy_saved", outcome="denied", actor_id=analyst.pk).exists()


def test_the_workbench_saves_the_declaration_through_the_service(
    make_dataset: Callable[..., Dataset], superuser: Any
) -> None:
    ds = numeric(make_dataset("trips", owner=None, columns=("rider", "fare")), "fare")
    response = signed_in(superuser).post(
        reverse("admin:privacy_privacypolicy_add"),
        {"dataset": ds.pk, "aggregates_only": "on", "unit_column": "rider", "contribution_limit": "2",
         "bounds": "fare 0 80", "categoricals": ""},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    ds.refresh_from_db()
    assert ds.aggregates_only and PrivacyPolicy.objects.get(dataset=ds).bounds.get().upper == 80
    assert AuditEvent.objects.filter(action="privacy.policy_saved", actor_id=superuser.pk).exists()


def test_the_approver_sets_the_budget_on_the_inbox_card(census: Dataset, analyst: Any, owner: Any) -> None:
    req = access_request_submit(
        requester=analyst, dataset=census, level="aggregate", justification="x", longest_allowed=True
    )
    inbox = signed_in(owner).get(reverse("portal:inbox")).content.decode()
    assert f'name="epsilon_{req.pk}"' in inbox
    post = {"ids": [req.pk], f"stage_{req.pk}": req.current_stage, "decision": "approve", f"epsilon_{req.pk}": "x"}
    signed_in(owner).post(reverse("portal:inbox_decide"), post)
    assert AccessRequest.objects.get(pk=req.pk).state == "pending"  # "x" is no budget
    signed_in(owner).post(reverse("portal:inbox_decide"), post | {f"epsilon_{req.pk}": "3"})
    grant = Grant.objects.get(source_request=req)
    assert grant.epsilon == Decimal(3) and grant.status == "active"
    assert not ProvisioningJob.objects.filter(grant=grant).exists()


def test_the_approver_sets_the_budget_in_the_workbench(census: Dataset, analyst: Any, owner: Any) -> None:
    req = access_request_submit(
        requester=analyst, dataset=census, level="aggregate", justification="x", longest_allowed=True
    )
    url = reverse("admin:governance_accessrequest_decide", args=[req.pk])
    signed_in(owner).post(url, {"decision": "approve", "stage": req.current_stage, "epsilon": "0.75"})
    assert Grant.objects.get(source_request=req).epsilon == Decimal("0.75")


def test_an_aggregate_request_without_a_budget_gets_the_default(census: Dataset, analyst: Any, owner: Any) -> None:
    assert grant_aggregate(census, analyst, owner, None).epsilon == Decimal("1")


def test_aggregate_access_needs_an_aggregates_only_dataset_a_user_and_no_columns(
    make_dataset: Callable[..., Dataset], census: Dataset, analyst: Any, owner: Any
) -> None:
    from governance.errors import DomainError

    plain = make_dataset("plain", owner=owner)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"dataset": plain}, "level"),
        ({"dataset": census, "columns": list(census.columns.filter(name="age"))}, "columns"),
        ({"dataset": census, "jit_credentials": True}, "jit_credentials"),
    ]
    for kwargs, field in cases:
        with pytest.raises(DomainError) as refused:
            access_request_submit(
                requester=analyst, level="aggregate", justification="x", longest_allowed=True, **kwargs
            )
        assert refused.value.field == field


def count_queries(client: Client, url: str) -> int:
    client.get(url)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(ctx.captured_queries)


def test_the_grants_pages_cost_the_same_with_one_grant_or_four(
    make_dataset: Callable[..., Dataset], analyst: Any, owner: Any
) -> None:
    def one_more(i: int) -> None:
        ds = numeric(make_dataset(f"agg_{i}", owner=owner, columns=("id", "n")), "n")
        privacy_policy_save(dataset=ds, actor=owner, aggregates_only=True, bounds=[Bound("n", 0, 9)])
        grant_aggregate(Dataset.objects.get(pk=ds.pk), analyst, owner, Decimal(1))

    client = signed_in(analyst)
    one_more(0)
    few = (count_queries(client, reverse("privacy:grants")), count_queries(client, "/api/v1/privacy/grants/"))
    for i in range(1, 4):
        one_more(i)
    many = (count_queries(client, reverse("privacy:grants")), count_queries(client, "/api/v1/privacy/grants/"))
    assert few == many
    assert many[0] <= 6 and many[1] <= 6, many


def test_a_stranger_finds_no_aggregate_grant_page(census: Dataset, analyst: Any, owner: Any) -> None:
    grant = grant_aggregate(census, analyst, owner, Decimal(1))
    url = reverse("privacy:grant", args=[grant.pk])
    assert signed_in(owner).get(url).status_code == 404
    assert signed_in(owner).post(url, {"kind": "count", "epsilon": "0.1"}).status_code == 404
    page = signed_in(analyst).get(url)
    assert page.status_code == 200 and 'id="budget-remaining">1<' in page.content.decode()


def test_each_stage_may_lower_the_budget_never_raise_it(
    make_dataset: Callable[..., Dataset], analyst: Any, owner: Any, officer: Any
) -> None:
    from governance.services.requests import access_request_approve

    ds = numeric(make_dataset("wards", classification="restricted", owner=owner, columns=("id", "beds")), "beds")
    privacy_policy_save(dataset=ds, actor=owner, aggregates_only=True, bounds=[Bound("beds", 0, 50)])
    req = access_request_submit(
        requester=analyst, dataset=ds, level="aggregate", justification="x", longest_allowed=True
    )
    assert req.current_stage == "owner"
    access_request_approve(access_request=req, approver=owner, epsilon=Decimal(5))
    access_request_approve(access_request=req, approver=officer, epsilon=Decimal(8))
    assert Grant.objects.get(source_request=req).epsilon == Decimal(5)


def test_a_read_request_waiting_when_the_dataset_becomes_aggregates_only_cannot_be_approved(
    make_dataset: Callable[..., Dataset], analyst: Any, owner: Any
) -> None:
    from governance.errors import ConflictError
    from governance.services.requests import access_request_approve

    ds = numeric(make_dataset("payroll", owner=owner, columns=("id", "pay")), "pay")
    req = access_request_submit(requester=analyst, dataset=ds, justification="x", longest_allowed=True)
    privacy_policy_save(dataset=ds, actor=owner, aggregates_only=True, bounds=[Bound("pay", 0, 9000)])
    with pytest.raises(ConflictError, match="allows differentially private aggregates only"):
        access_request_approve(access_request=req, approver=owner)
    assert not Grant.objects.filter(source_request=req).exists()
