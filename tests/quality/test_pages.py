"""The quality section, badges and filter as the server renders them (query counts pinned)."""

from __future__ import annotations

from typing import Any

import pytest

from quality.services.checks import quality_check_create
from quality.services.runs import quality_run

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_dataset_page_shows_checks_their_trend_and_a_withheld_profile(
    client: Any, customers: Any, owner: Any, analyst: Any
) -> None:
    quality_check_create(actor=owner, dataset=customers, name="email present", kind="completeness", column="email")
    quality_run(dataset=customers)
    quality_run(dataset=customers)
    client.force_login(owner)
    page = client.get(f"/portal/datasets/{customers.pk}/").content.decode()
    assert 'data-quality="failing"' in page and "1 of 1 checks failing" in page
    assert page.count("<rect ") == 2 and "Run the checks now" in page
    assert "withheld (sensitive column)" in page  # email: a PII suggestion
    assert "UK (" in page  # the owner sees country's most common values
    client.logout()
    client.force_login(analyst)
    page = client.get(f"/portal/datasets/{customers.pk}/").content.decode()
    assert 'data-quality="failing"' in page and "Run the checks now" not in page
    assert "UK (" not in page  # no access to the data: counts only
    refused = client.post(f"/portal/quality/datasets/{customers.pk}/run/", follow=True).content.decode()
    assert "Only an owner or steward" in refused


def test_the_catalog_filters_by_quality_with_badges_in_a_fixed_number_of_queries(
    client: Any, customers: Any, owner: Any, analyst: Any, django_assert_max_num_queries: Any
) -> None:
    quality_check_create(actor=owner, dataset=customers, name="email present", kind="completeness", column="email")
    quality_run(dataset=customers)
    client.force_login(analyst)
    failing = client.get("/portal/?quality=failing").content.decode()
    assert "shop.customers" in failing and "shop.orders" not in failing
    assert "1 of 1 checks failing" in failing
    every = client.get("/portal/").content.decode()
    assert "shop.orders" in every and "no checks" in every
    with django_assert_max_num_queries(12):  # the page's own, plus two for every badge at once
        client.get("/portal/")
    assert client.get("/portal/?quality=bogus").status_code == 200  # a form error, not a 500


def test_the_admin_defines_checks_through_the_service(
    client: Any, customers: Any, owner: Any, analyst: Any, gov_admin: Any
) -> None:
    from audit.models import AuditEvent
    from quality.models import QualityCheck

    url = "/admin/quality/qualitycheck/add/"
    form = {"dataset": customers.pk, "name": "score set", "kind": "completeness", "column": "score",
            "params": "{}", "threshold": "0", "enabled": "on", "description": ""}  # fmt: skip
    client.force_login(analyst)  # may open the form, but is no steward of the dataset
    client.post(url, form)
    assert not QualityCheck.objects.exists()
    assert AuditEvent.objects.filter(action="quality_check.create", outcome="denied", actor_id=analyst.pk).exists()
    client.force_login(owner)
    bad = client.post(url, {**form, "column": "no_such_column"}, follow=True).content.decode()
    assert "is not a column of this dataset" in bad and not QualityCheck.objects.exists()
    client.post(url, form)
    created = QualityCheck.objects.get()
    assert (created.name, created.created_by_id) == ("score set", owner.pk)
    assert AuditEvent.objects.filter(action="quality_check.created", actor_id=owner.pk).exists()


def test_a_request_on_a_source_without_a_database_name_shows_why_it_has_no_plan(
    make_dataset: Any, analyst: Any, owner: Any
) -> None:
    """Found by schemathesis' stateful phase: a source registered without a database name made the
    request's plan (and so its API detail) a 500."""
    import datetime as dt

    from governance.models import DataSource
    from governance.selectors.plans import plan_preview
    from governance.services.requests import access_request_submit

    dataset = make_dataset("ledger", owner=owner)
    DataSource.objects.filter(pk=dataset.source_id).update(database="", provisioning_enabled=True)
    dataset.refresh_from_db()
    request = access_request_submit(
        requester=analyst, dataset=dataset, justification="x", duration=dt.timedelta(days=1)
    )
    lines = plan_preview(request)
    assert len(lines) == 1 and "No plan can be rendered" in lines[0] and "database name" in lines[0]


def test_owners_define_change_review_and_remove_checks_on_the_portal(
    client: Any, customers: Any, owner: Any, analyst: Any, gov_admin: Any
) -> None:
    from audit.models import AuditEvent
    from quality.models import QualityCheck

    new = f"/portal/quality/datasets/{customers.pk}/checks/new/"
    base = {"name": "score range", "kind": "range", "column": "score", "threshold": "0", "enabled": "on"}
    client.force_login(analyst)
    assert "Only an owner or steward" in client.get(new, follow=True).content.decode()
    client.force_login(owner)
    page = client.get(f"/portal/datasets/{customers.pk}/").content.decode()
    assert new in page
    refused = client.post(new, {**base})  # a range without bounds: on the form's min field
    assert refused.status_code == 400 and "A range needs min, max or both." in refused.content.decode()
    bad = client.post(new, {**base, "kind": "pattern", "column": "email", "pattern": "("})
    assert bad.status_code == 400 and "not a regular expression" in bad.content.decode()
    assert not QualityCheck.objects.exists()
    assert client.post(new, {**base, "minimum": "0", "maximum": "89"}).status_code == 302
    made = QualityCheck.objects.get()
    assert (made.kind, made.params, made.created_by_id) == ("range", {"min": 0, "max": 89}, owner.pk)
    edit = f"/portal/quality/datasets/{customers.pk}/checks/{made.pk}/"
    assert 'value="89"' in client.get(edit).content.decode()
    client.post(edit, {**base, "minimum": "0", "maximum": "95", "threshold": "0.05"})
    made.refresh_from_db()
    assert made.params["max"] == 95 and made.threshold == 0.05
    sql = client.post(
        new,
        {
            **base,
            "name": "no 42",
            "kind": "custom_sql",
            "column": "",
            "sql": "SELECT * FROM shop.customers WHERE score = 42",
        },
    )
    assert sql.status_code == 302
    custom = QualityCheck.objects.get(name="no 42")
    client.post(f"/portal/quality/datasets/{customers.pk}/checks/{custom.pk}/review/", follow=True)
    assert QualityCheck.objects.get(pk=custom.pk).reviewed_at is None  # not by its author
    client.force_login(gov_admin)
    client.post(f"/portal/quality/datasets/{customers.pk}/checks/{custom.pk}/review/")
    assert QualityCheck.objects.get(pk=custom.pk).reviewed_by_id == gov_admin.pk
    client.force_login(owner)
    client.post(f"/portal/quality/datasets/{customers.pk}/checks/{made.pk}/delete/")
    assert not QualityCheck.objects.filter(pk=made.pk).exists()
    actions = set(AuditEvent.objects.filter(action__startswith="quality_check.").values_list("action", flat=True))
    assert {
        "quality_check.created",
        "quality_check.updated",
        "quality_check.reviewed",
        "quality_check.deleted",
    } <= actions
