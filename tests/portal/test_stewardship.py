"""Stewardship in the portal: the Suggestions queue and the dataset page's "PII suggestions" section.
Who sees what, the reasons and the preview before confirming, decisions one or many (all or none),
query counts that do not grow with the rows, and a steward's whole review in Chromium."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from guardian.shortcuts import assign_perm

from accounts.models import User
from governance.models import ColumnTag, Dataset, TagStatus
from tests.conftest import PASSWORD
from tests.governance.stewardship_world import Estate, build, suggest

pytestmark = pytest.mark.django_db


@pytest.fixture
def estate(make_dataset: Callable[..., Dataset], owner: User, other_owner: User) -> Estate:
    return build(make_dataset, owner, other_owner)


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def status(tag: ColumnTag) -> str:
    return ColumnTag.objects.get(pk=tag.pk).status


def test_the_queue_shows_a_steward_their_suggestions_with_why_and_what_confirming_changes(
    estate: Estate, owner: User
) -> None:
    page = signed_in(owner).get("/portal/suggestions/").content.decode()
    assert "2 to review" in page
    assert "sales.customers" in page and "finance.payments" not in page
    assert "email_pattern: 73% of 40 sampled values match name@domain" in page
    assert "raises sales.customers from Internal to Confidential; 2 views that read it rise too" in page
    assert 'aria-current="page">Suggestions' in page


def test_officers_see_every_suggestion_strangers_none(estate: Estate, officer: User, analyst: User) -> None:
    assert "3 to review" in signed_in(officer).get("/portal/suggestions/").content.decode()
    stranger = signed_in(analyst).get("/portal/suggestions/").content.decode()
    assert "Nothing to review" in stranger and "sales.customers" not in stranger


def test_filters_and_bad_filter_values(estate: Estate, officer: User) -> None:
    client = signed_in(officer)
    only = client.get("/portal/suggestions/?tag=iban&source=&min_confidence=").content.decode()
    assert "1 to review" in only and "finance.payments" in only
    confident = client.get("/portal/suggestions/?min_confidence=95").content.decode()
    assert "1 to review" in confident
    by_dataset = client.get(f"/portal/suggestions/?dataset={estate.customers.pk}").content.decode()
    assert "2 to review" in by_dataset
    bad = client.get("/portal/suggestions/?min_confidence=150")
    assert bad.status_code == 200
    assert "Min_confidence: Ensure this value is less than or equal to 100." in bad.content.decode()


def test_confirm_one_reject_another_and_the_classification_rises(estate: Estate, owner: User) -> None:
    client = signed_in(owner)
    response = client.post(
        "/portal/suggestions/decide/", {"row": f"confirm-{estate.email.pk}", "next": "/portal/suggestions/"}
    )
    assert response.status_code == 302 and response["Location"] == "/portal/suggestions/"
    shown = client.get("/portal/suggestions/").content.decode()
    assert "Confirmed Email address on sales.customers.email." in shown
    assert "sales.customers is now Confidential (was Internal)" in shown
    assert "reporting.mailing is now Confidential (was Internal)" in shown
    client.post("/portal/suggestions/decide/", {"decision": "reject", "ids": [estate.name.pk]})
    assert (status(estate.email), status(estate.name)) == (TagStatus.CONFIRMED, TagStatus.REJECTED)
    page = client.get(f"/portal/datasets/{estate.customers.pk}/").content.decode()
    assert '<span class="badge rank-30">Confidential</span>' in page or "Confidential</span></h1>" in page
    assert "No suggestion waits for review." in page
    assert "Rejected" in page and "owner" in page  # decided, by whom


def test_a_selection_is_all_or_nothing_and_a_strangers_ids_are_not_found(
    estate: Estate, owner: User, analyst: User
) -> None:
    client = signed_in(owner)
    client.post("/portal/suggestions/decide/", {"decision": "confirm", "ids": [estate.email.pk, estate.iban.pk]})
    shown = client.get("/portal/suggestions/").content.decode()
    assert f"Tag #{estate.iban.pk}: not found. Nothing was decided." in shown
    assert status(estate.email) == TagStatus.SUGGESTED
    signed_in(analyst).post("/portal/suggestions/decide/", {"row": f"confirm-{estate.email.pk}"})
    assert status(estate.email) == TagStatus.SUGGESTED
    assert signed_in(owner).get("/portal/suggestions/decide/").status_code == 405


def test_the_selection_preview_fragment(estate: Estate, owner: User, analyst: User) -> None:
    client = signed_in(owner)
    body = client.post("/portal/suggestions/preview/", {"ids": [estate.email.pk, estate.name.pk]}).content.decode()
    assert "If you confirm the 2 selected:" in body and "from Internal to Confidential" in body
    assert "Select suggestions" in client.post("/portal/suggestions/preview/", {}).content.decode()
    # Someone else's tags are left out of the preview, silently.
    assert (
        "Select suggestions"
        in signed_in(analyst).post("/portal/suggestions/preview/", {"ids": [estate.email.pk]}).content.decode()
    )


def test_the_dataset_page_section_for_stewards_only_and_inherited_tags_point_to_the_source(
    estate: Estate, owner: User, analyst: User, other_owner: User
) -> None:
    owner_page = signed_in(owner).get(f"/portal/datasets/{estate.customers.pk}/").content.decode()
    assert 'id="pii-suggestions"' in owner_page and "Confirm selected" in owner_page
    assert "73% of 40 sampled values" in owner_page
    assert (
        'id="pii-suggestions"'
        not in signed_in(analyst).get(f"/portal/datasets/{estate.customers.pk}/").content.decode()
    )
    assert (
        'id="pii-suggestions"'
        not in signed_in(other_owner).get(f"/portal/datasets/{estate.customers.pk}/").content.decode()
    )
    signed_in(owner).post("/portal/suggestions/decide/", {"row": f"confirm-{estate.email.pk}"})
    # On a view of a view, the inherited tag names the column it comes from and links to its
    # dataset, where it is decided (a steward of the view decides nothing about it there).
    assign_perm("steward_dataset", other_owner, estate.mailing)  # arrangement: other_owner stewards the view
    view_page = signed_in(other_owner).get(f"/portal/datasets/{estate.mailing.pk}/").content.decode()
    assert "Inherited through lineage" in view_page
    assert "from <code>sales.customers.email</code>" in view_page
    assert f'href="/portal/datasets/{estate.customers.pk}/#pii-suggestions">decide at the source' in view_page
    assert "Confirm selected" not in view_page  # nothing to decide on the view itself


def _count(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx)


def test_query_counts_do_not_grow_with_the_rows(
    estate: Estate, owner: User, make_dataset: Callable[..., Dataset], django_assert_num_queries: Any
) -> None:
    client = signed_in(owner)
    _count(client, "/portal/suggestions/")  # content types, once per process
    queue = _count(client, "/portal/suggestions/")
    page = _count(client, f"/portal/datasets/{estate.customers.pk}/")
    for i in range(10):
        more = make_dataset(f"more_{i}", schema="sales", owner=owner, columns=("id", "mail", "phone"))
        suggest(more, "mail", "email", 0.9, [])
        suggest(more, "phone", "phone", 0.7, [])
    suggest(estate.customers, "country", "address", 0.5, [])
    # Session, user, groups, count, the page of tags, the stewarded ids, the preview's basis
    # (classifications, what lies downstream, the edges, the datasets), the sources of the filter.
    with django_assert_num_queries(queue):
        client.get("/portal/suggestions/")
    with django_assert_num_queries(page):
        client.get(f"/portal/datasets/{estate.customers.pk}/")
    # The dataset page also reads its data-quality row and the steward check behind "Define a check".
    assert (queue, page) == (11, 21)


@pytest.mark.django_db(transaction=True)
def test_a_steward_reviews_suggestions_in_chromium(
    page: Any,
    live_server: Any,
    make_dataset: Callable[..., Dataset],
    make_user: Callable[..., User],
    owner: User,
    other_owner: User,
    gov_admin: User,
) -> None:
    """A steward appointed by a governance admin (not the owner, not staff) finds the queue from the
    dashboard, sees why and what confirming changes, confirms one and rejects another."""
    from playwright.sync_api import expect

    from governance.services.catalog import dataset_steward_add

    estate = build(make_dataset, owner, other_owner)
    stella = make_user("stella", staff=False)
    dataset_steward_add(dataset=estate.customers, user=stella, actor=gov_admin)
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("stella")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{live_server.url}/portal/dashboard/")
    page.get_by_role("link", name="2 PII suggestions to review").click()
    expect(page.get_by_role("heading", name="Suggestions")).to_contain_text("2 to review")
    row = page.locator(f"#tag-{estate.email.pk}")
    expect(row).to_contain_text("73% of 40 sampled values match name@domain")
    expect(row).to_contain_text("raises sales.customers from Internal to Confidential")
    # Selecting shows what the selection would change (HTMX), before confirming.
    page.get_by_label("Select Email address on email").check()
    expect(page.locator("#selection-preview")).to_contain_text("If you confirm the 1 selected")
    expect(page.locator("#selection-preview")).to_contain_text("reporting.mailing (Internal → Confidential)")
    if os.environ.get("SCREENSHOT_DIR"):  # docs/screenshots/portal-suggestions.png
        page.screenshot(path=str(Path(os.environ["SCREENSHOT_DIR"]) / "portal-suggestions.png"), full_page=True)
    page.get_by_role("button", name="Confirm Email address on email").click()
    expect(page.get_by_role("status")).to_contain_text("sales.customers is now Confidential (was Internal)")
    page.get_by_role("button", name="Reject Person name on user").click()
    expect(page.get_by_role("status")).to_contain_text("Rejected Person name on sales.customers.user")
    expect(page.get_by_text("Nothing to review.")).to_be_visible()
    page.goto(f"{live_server.url}/portal/datasets/{estate.customers.pk}/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Confidential")
    expect(page.locator("#decided-tags")).to_contain_text("Confirmed")
    expect(page.locator("#decided-tags")).to_contain_text("Rejected")
    assert ColumnTag.objects.get(pk=estate.email.pk).status == TagStatus.CONFIRMED
