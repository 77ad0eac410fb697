"""The portal's catalog and dataset pages: what each person sees, filters, bad input, and query
counts that do not grow with the rows on the page."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from governance.models import Dataset
from governance.services.requests import access_request_approve, access_request_submit
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_anonymous_is_sent_to_sign_in(db: Any) -> None:
    response = Client().get("/portal/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert Client().get("/").status_code == 302


def test_catalog_search_and_filters(
    analyst: User, make_dataset: Callable[..., Dataset], restricted_dataset: Dataset, owner: User
) -> None:
    make_dataset("ledger", schema="finance", owner=owner)
    client = signed_in(analyst)
    page = client.get("/portal/").content.decode()
    assert "hr.employees" in page and "finance.ledger" in page and "2 PII" in page
    only = client.get("/portal/?classification=restricted").content.decode()
    assert "hr.employees" in only and "finance.ledger" not in only
    by_tag = client.get("/portal/?tag=ssn").content.decode()
    assert "hr.employees" in by_tag and "finance.ledger" not in by_tag
    none = client.get("/portal/?q=nothing-like-this").content.decode()
    assert "Nothing found" in none


def test_the_search_form_with_its_empty_fields_means_any(analyst: User, restricted_dataset: Dataset) -> None:
    """The browser sends every field of the form, the empty ones too: unlike the API (where an
    empty value of a typed filter is a 400), the portal reads them as "any"."""
    body = signed_in(analyst).get("/portal/?q=employees&source=&classification=&tag=&owner=").content.decode()
    assert "hr.employees" in body and 'role="alert"' not in body


def test_a_bad_filter_value_is_an_error_on_the_page_not_a_500(analyst: User, restricted_dataset: Dataset) -> None:
    response = signed_in(analyst).get("/portal/?tag=flying-saucer")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'role="alert"' in body and "0 datasets" in body


def test_dataset_page_shows_pii_columns_policy_and_my_access(
    analyst: User, owner: User, restricted_dataset: Dataset, officer: User
) -> None:
    url = f"/portal/datasets/{restricted_dataset.pk}/"
    body = signed_in(analyst).get(url).content.decode()
    assert "Restricted" in body and "2 of 5" in body and "US social security number" in body
    assert body.count('class="sensitive"') == 2
    assert "You have no access" in body and "Who has access" not in body  # not for requesters
    req = access_request_submit(
        requester=analyst, dataset=restricted_dataset, justification="payroll audit", duration=dt.timedelta(days=3)
    )
    assert f"Request #{req.pk}" in signed_in(analyst).get(url).content.decode()
    access_request_approve(access_request=req, approver=owner)
    access_request_approve(access_request=req, approver=officer)
    mine = signed_in(analyst).get(url).content.decode()
    section = mine.split('id="my-access"')[1].split("</section>")[0]
    assert "until" in section and "You have no access" not in section, section
    who = signed_in(owner).get(url).content.decode()
    assert "Who has access" in who and "analyst" in who


def test_unknown_dataset_is_a_404(analyst: User) -> None:
    assert signed_in(analyst).get("/portal/datasets/999999/").status_code == 404


def _count(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx)


def test_catalog_and_dataset_query_counts_do_not_grow(
    analyst: User, owner: User, make_dataset: Callable[..., Dataset], restricted_dataset: Dataset
) -> None:
    client = signed_in(owner)
    # The first page view of the process fills the content-type cache (one query, once): not per row.
    _count(client, f"/portal/datasets/{restricted_dataset.pk}/")
    catalog_before = _count(client, "/portal/")
    dataset_before = _count(client, f"/portal/datasets/{restricted_dataset.pk}/")
    for i in range(12):
        make_dataset(f"more_{i}", owner=owner, pii={"id": "email"}, columns=("id", "a", "b", "c"))
    grant_req = access_request_submit(
        requester=analyst, dataset=restricted_dataset, justification="x", duration=dt.timedelta(days=1)
    )
    assert grant_req.pk
    assert _count(client, "/portal/") == catalog_before
    assert _count(client, f"/portal/datasets/{restricted_dataset.pk}/") == dataset_before
    # Session, user, groups (for "who has access", and the header's Compliance link: one lookup,
    # cached on the user), count, page (with its PII aggregate)...; the
    # dataset page adds the columns with their tags, what it reads and what reads it (lineage), my
    # grants and requests, the holders, and for its steward the "PII suggestions" section (the
    # steward permission, the column tags). Data quality (quality/templatetags): one query for every
    # badge of the catalog page; on the dataset page its quality row and the steward check behind
    # "Define a check" (guardian: user and group permissions).
    assert (catalog_before, dataset_before) == (8, 16)


@pytest.mark.django_db(transaction=True)
def test_catalog_in_a_browser(
    page: Any, live_server: Any, analyst: User, owner: User, restricted_dataset: Dataset, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    shots = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)
    page.goto(f"{live_server.url}/portal/")
    page.get_by_label("Username").fill("analyst")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("searchbox", name="Search").fill("employees")
    page.keyboard.press("Enter")
    expect(page.get_by_role("link", name="hr.employees")).to_be_visible()
    page.screenshot(path=str(shots / "portal-catalog.png"), full_page=True)
    page.get_by_role("link", name="hr.employees").click()
    expect(page.get_by_role("heading", name="Columns")).to_be_visible()
    expect(page.locator("tr.sensitive")).to_have_count(2)
    expect(page.get_by_text("You have no access to this dataset.")).to_be_visible()
    page.screenshot(path=str(shots / "portal-dataset.png"), full_page=True)
    page.get_by_role("link", name="Request access").click()
    page.get_by_label("ssn", exact=True).check()  # not its treatment choice
    page.locator("#id_duration").fill("5")
    page.locator("#id_duration_unit").select_option("hours")
    page.get_by_label("Justification").fill("payroll audit")
    # Restricted PII is pseudonymised unless asked for raw (docs/privacy.md#column-treatments).
    page.get_by_label("Treatment of ssn").select_option("raw")
    # The preview follows the form (HTMX): naming ssn includes it, and the plan is shown.
    expect(page.locator("#plan-preview")).to_contain_text("Sensitive columns included: ssn")
    expect(page.locator("#plan-preview")).to_contain_text('GRANT SELECT ("ssn") ON TABLE "hr"."employees"')
    page.screenshot(path=str(shots / "portal-request.png"), full_page=True)
    page.get_by_role("button", name="Submit request").click()
    expect(page.locator(".messages")).to_contain_text("submitted: pending")
    expect(page.get_by_text("is waiting for the dataset owner")).to_be_visible()
    from governance.models import AccessRequest

    assert AccessRequest.objects.get().duration_text == "5 hours"  # asked in hours, said in words


# --- asking for access ------------------------------------------------------------------------------


def test_request_form_submits_through_the_service(analyst: User, restricted_dataset: Dataset) -> None:
    from audit.models import AuditEvent
    from governance.models import AccessRequest

    url = f"/portal/datasets/{restricted_dataset.pk}/request/"
    client = signed_in(analyst)
    page = client.get(url).content.decode()
    assert "at most <strong>30 days</strong>" in page and 'name="columns"' in page and "ssn" in page
    ssn = restricted_dataset.columns.get(name="ssn")
    response = client.post(
        url,
        {
            "dataset": restricted_dataset.pk,
            "level": "read",
            "columns": [ssn.pk],
            "duration_days": 5,
            "justification": "payroll audit",
        },
    )
    assert response.status_code == 302 and response["Location"] == f"/portal/datasets/{restricted_dataset.pk}/"
    req = AccessRequest.objects.get(requester=analyst)
    assert req.covered_columns == ["ssn"] and req.state == "pending"
    assert AuditEvent.objects.filter(action="access_request.submitted", actor=analyst).exists()
    follow = client.get(response["Location"]).content.decode()
    assert f"Request #{req.pk} submitted" in follow


def test_request_form_shows_policy_refusals_on_the_field_and_saves_nothing(
    analyst: User, restricted_dataset: Dataset
) -> None:
    from governance.models import AccessRequest

    url = f"/portal/datasets/{restricted_dataset.pk}/request/"
    response = signed_in(analyst).post(
        url, {"dataset": restricted_dataset.pk, "level": "read", "duration_days": 90, "justification": ""}
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert 'class="form-row has-error"' in body and "30" in body
    assert not AccessRequest.objects.exists()


def test_request_form_for_another_dataset_id_is_refused(
    analyst: User, restricted_dataset: Dataset, make_dataset: Callable[..., Dataset]
) -> None:
    from governance.models import AccessRequest

    other = make_dataset("ledger", schema="finance")
    response = signed_in(analyst).post(
        f"/portal/datasets/{restricted_dataset.pk}/request/",
        {"dataset": other.pk, "level": "read", "duration_days": 1, "justification": "x"},
    )
    assert response.status_code == 200 and not AccessRequest.objects.exists()


def test_request_form_previews_what_would_be_granted(analyst: User, restricted_dataset: Dataset) -> None:
    from governance.models import AccessRequest

    client = signed_in(analyst)
    url = f"/portal/datasets/{restricted_dataset.pk}/request/preview/"
    form = client.get(f"/portal/datasets/{restricted_dataset.pk}/request/").content.decode()
    assert f'hx-post="{url}"' in form and 'id="plan-preview"' in form
    whole = client.post(url, {"dataset": restricted_dataset.pk, "level": "read"}).content.decode()
    # Restricted: PII is left out unless named, and two stages decide.
    assert "Left out (sensitive, not named):</strong> full_name, ssn" in whole
    assert "Dataset owner or steward, then Security officer" in whole
    columns = "(&quot;department&quot;, &quot;employee_id&quot;, &quot;salary&quot;)"
    assert f"GRANT SELECT {columns} ON TABLE &quot;hr&quot;.&quot;employees&quot;" in whole
    ssn = restricted_dataset.columns.get(name="ssn")
    named = client.post(url, {"dataset": restricted_dataset.pk, "level": "read", "columns": [ssn.pk]}).content.decode()
    assert 'Sensitive columns included:</strong> <span class="pii">ssn</span>' in named
    bad = client.post(url, {"dataset": restricted_dataset.pk, "level": "superuser"})
    assert bad.status_code == 200 and "Select a valid choice" in bad.content.decode()
    assert not AccessRequest.objects.exists()  # a preview saves nothing


def test_pages_carry_a_content_security_policy_without_inline_script(analyst: User) -> None:
    response = signed_in(analyst).get("/portal/")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in policy
    assert "<script>" not in response.content.decode() and "onchange=" not in response.content.decode()
